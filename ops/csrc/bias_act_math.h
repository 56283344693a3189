// Element-wise math of bias_act shared by the CPU and CUDA kernels (NVlabs torch_utils/ops/bias_act.py).
// Modes follow NVIDIA's kernel: grad 0 = forward, 1 = first derivative (x is the incoming gradient),
// 2 = curvature term of the second derivative. act indices are NVIDIA's cuda_idx (activation_funcs).
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

namespace suite_ops {

template <typename T>
C10_HOST_DEVICE inline T sa_exp(T v) {
#ifdef __CUDA_ARCH__
  return exp(v);
#else
  return std::exp(v);
#endif
}

template <typename T>
C10_HOST_DEVICE inline T sa_expm1(T v) {
#ifdef __CUDA_ARCH__
  return expm1(v);
#else
  return std::expm1(v);
#endif
}

template <typename T>
C10_HOST_DEVICE inline T sa_log1p(T v) {
#ifdef __CUDA_ARCH__
  return log1p(v);
#else
  return std::log1p(v);
#endif
}

template <typename T>
C10_HOST_DEVICE inline T sa_tanh(T v) {
#ifdef __CUDA_ARCH__
  return tanh(v);
#else
  return std::tanh(v);
#endif
}

// One element: x is the input (grad 0) or the incoming gradient (grad 1, 2); xref = x + b of the forward,
// yref = saved forward output (0 when not saved), dy = outer gradient (grad 2) or 1.
template <int A, int G, typename T>
C10_HOST_DEVICE inline T bias_act_elem(T x, T xref, T yref, T dy, T alpha, T gain, T clamp) {
  const T one = T(1), two = T(2), zero = T(0);
  const T exp_range = T(80);
  const T selu_scale = T(1.0507009873554804934193349852946);
  const T selu_alpha = T(1.6732632423543772848170429916717);
  const T yy = (gain != zero) ? yref / gain : zero;
  T y = zero;
  if (A == 1) {  // linear
    y = x;
  } else if (A == 2) {  // relu
    y = (G == 0) ? (x > zero ? x : zero) : (yy > zero ? x : zero);
    if (G == 2) y = zero;
  } else if (A == 3) {  // lrelu
    y = (G == 0) ? (x > zero ? x : x * alpha) : (yy > zero ? x : x * alpha);
    if (G == 2) y = zero;
  } else if (A == 4) {  // tanh
    if (G == 0) y = sa_tanh(x);
    if (G == 1) y = x * (one - yy * yy);
    if (G == 2) y = x * (one - yy * yy) * (-two * yy);
  } else if (A == 5) {  // sigmoid
    if (G == 0) y = (x < -exp_range) ? zero : one / (sa_exp(-x) + one);
    if (G == 1) y = x * yy * (one - yy);
    if (G == 2) y = x * yy * (one - yy) * (one - two * yy);
  } else if (A == 6) {  // elu
    if (G == 0) y = (x >= zero) ? x : sa_expm1(x);
    if (G == 1) y = (yy >= zero) ? x : x * (yy + one);
    if (G == 2) y = (yy >= zero) ? zero : x * (yy + one);
  } else if (A == 7) {  // selu
    if (G == 0) y = (x >= zero) ? selu_scale * x : (selu_scale * selu_alpha) * sa_expm1(x);
    if (G == 1) y = (yy >= zero) ? x * selu_scale : x * (yy + selu_scale * selu_alpha);
    if (G == 2) y = (yy >= zero) ? zero : x * (yy + selu_scale * selu_alpha);
  } else if (A == 8) {  // softplus (threshold 20 as torch.nn.functional.softplus)
    if (G == 0) y = (x > T(20)) ? x : sa_log1p(sa_exp(x));
    if (G == 1) y = x * (one - sa_exp(-yy));
    if (G == 2) {
      const T c = sa_exp(-yy);
      y = x * c * (one - c);
    }
  } else if (A == 9) {  // swish
    if (G == 0) {
      y = (x < -exp_range) ? zero : x / (sa_exp(-x) + one);
    } else {
      const T c = sa_exp(xref);
      const T d = c + one;
      if (G == 1) y = (xref > exp_range) ? x : x * c * (xref + d) / (d * d);
      if (G == 2) y = (xref > exp_range) ? zero : x * c * (xref * (two - d) + two * d) / (d * d * d);
    }
  }
  y = y * gain * dy;
  // Branch-free clamp (selects only) so the CPU loops vectorise.
  if (clamp >= zero) {
    if (G == 0) {
      y = (y > clamp) ? clamp : y;
      y = (y < -clamp) ? -clamp : y;
    } else {
      y = ((yref > -clamp) & (yref < clamp)) ? y : zero;
    }
  }
  return y;
}

// Masked first derivative of the piecewise-linear activations (linear, relu, lrelu; docs/ops.md): the
// forward packs, per 32 consecutive elements, two 32-bit words: bit k of word 0 says the saved output was on
// the positive side (y * sign(gain) > 0), bit k of word 1 that the gradient flows (not clamped; for relu also
// positive). The backward is then dx = flows ? dy * (positive ? 1 : slope) * gain : 0 (the reference's
// rounding), reading dy and 1/16 of a float per element instead of dy and y.
constexpr int64_t kMaskGroup = 32;

inline int64_t mask_words(int64_t numel) { return 2 * ((numel + kMaskGroup - 1) / kMaskGroup); }

// Slope on the negative side: 1 (linear), alpha (lrelu); relu's negative side never flows.
template <typename T>
C10_HOST_DEVICE inline T masked_neg_slope(int64_t act, T alpha) {
  return act == 3 ? alpha : T(1);
}

// The two mask bits of one saved output y (the value as stored, so every dtype and device agree).
template <int A, typename T>
C10_HOST_DEVICE inline void mask_bits(T y, T gain_sign, T clamp, bool& positive, bool& flows) {
  positive = y * gain_sign > T(0);
  flows = clamp < T(0) || ((y > -clamp) & (y < clamp));
  if (A == 2) flows = flows && positive;
}

// One element of the masked first derivative.
template <typename T>
C10_HOST_DEVICE inline T masked_grad_elem(T dy, bool positive, bool flows, T slope, T gain) {
  return flows ? (positive ? dy : dy * slope) * gain : T(0);
}

// Calls f.template operator()<A, G>() with compile-time activation and mode.
template <typename F>
inline void dispatch_act(int64_t act, int64_t grad, const F& f) {
#define SUITE_OPS_ACT_CASE(A)                       \
  case A:                                           \
    if (grad == 0)                                  \
      f.template operator()<A, 0>();                \
    else if (grad == 1)                             \
      f.template operator()<A, 1>();                \
    else                                            \
      f.template operator()<A, 2>();                \
    return;
  switch (act) {
    SUITE_OPS_ACT_CASE(1)
    SUITE_OPS_ACT_CASE(2)
    SUITE_OPS_ACT_CASE(3)
    SUITE_OPS_ACT_CASE(4)
    SUITE_OPS_ACT_CASE(5)
    SUITE_OPS_ACT_CASE(6)
    SUITE_OPS_ACT_CASE(7)
    SUITE_OPS_ACT_CASE(8)
    SUITE_OPS_ACT_CASE(9)
    default:
      break;
  }
#undef SUITE_OPS_ACT_CASE
}

}  // namespace suite_ops
