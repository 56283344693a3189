// CPU kernels of suite_ops::bias_act (NVlabs torch_utils/ops/bias_act.py): one fused pass, parallel over [outer, C]
// rows of the contiguous tensor viewed as [outer, C, inner] (C = x.shape[dim]), activation and mode resolved at
// compile time; and of bias_act_masked / bias_act_masked_grad, the 2-bit-mask path of linear, relu and lrelu.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#define SUITE_OPS_X86 1
#include <immintrin.h>
#else
#define SUITE_OPS_X86 0
#endif

#include "bias_act_math.h"
#include "common.h"

namespace suite_ops {
namespace {

// AVX2 loops of the piecewise-linear activations in fp32: compiled for AVX2 by attribute and called only when
// cpu_has_avx2() (the package builds for the baseline ISA).
#if SUITE_OPS_X86
// Full groups [wb, we) of a tensor whose rows (inner) are whole groups: values and (MASK) both mask words in one
// pass over registers, with bias_act_elem's selects and rounding (NaN and -0 included; _CMP_*_OQ is C's < and >).
template <int A, bool CLAMP, bool STREAM, bool MASK>
__attribute__((target("avx2"))) void forward_avx2(const float* x, const float* bias, int64_t inner, int64_t channels,
                                                  int64_t wb, int64_t we, float alpha, float gain, float gain_sign,
                                                  float clamp, float* y, int32_t* mask) {
  const __m256 a = _mm256_set1_ps(alpha), g = _mm256_set1_ps(gain), s = _mm256_set1_ps(gain_sign);
  const __m256 zero = _mm256_setzero_ps(), hi = _mm256_set1_ps(clamp), lo = _mm256_set1_ps(-clamp);
  for (int64_t w = wb; w < we; ++w) {
    const int64_t i0 = w * kMaskGroup;
    const __m256 b = _mm256_set1_ps(bias ? bias[(i0 / inner) % channels] : 0.f);
    uint32_t pos = 0, flow = 0;
    for (int j = 0; j < 4; ++j) {
      const int64_t i = i0 + 8 * j;
      __m256 v = _mm256_add_ps(_mm256_loadu_ps(x + i), b);
      if (A == 2) v = _mm256_and_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ), v);
      if (A == 3) v = _mm256_blendv_ps(_mm256_mul_ps(v, a), v, _mm256_cmp_ps(v, zero, _CMP_GT_OQ));
      v = _mm256_mul_ps(v, g);
      __m256 f = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
      if (CLAMP) {
        v = _mm256_blendv_ps(v, hi, _mm256_cmp_ps(v, hi, _CMP_GT_OQ));
        v = _mm256_blendv_ps(v, lo, _mm256_cmp_ps(v, lo, _CMP_LT_OQ));
        f = _mm256_and_ps(_mm256_cmp_ps(v, lo, _CMP_GT_OQ), _mm256_cmp_ps(v, hi, _CMP_LT_OQ));
      }
      if (STREAM)
        _mm256_stream_ps(y + i, v);
      else
        _mm256_storeu_ps(y + i, v);
      if (!MASK) continue;
      const __m256 p = _mm256_cmp_ps(_mm256_mul_ps(v, s), zero, _CMP_GT_OQ);
      if (A == 2) f = _mm256_and_ps(f, p);
      pos |= uint32_t(_mm256_movemask_ps(p)) << (8 * j);
      flow |= uint32_t(_mm256_movemask_ps(f)) << (8 * j);
    }
    if (MASK) {
      mask[2 * w] = int32_t(pos);
      mask[2 * w + 1] = int32_t(flow);
    }
  }
  if (STREAM) _mm_sfence();
}

// Full groups [wb, we) of the masked first derivative.
template <bool STREAM>
__attribute__((target("avx2"))) void masked_grad_avx2(const float* dy, const int32_t* mask, int64_t wb, int64_t we,
                                                      float slope, float gain, float* dx) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256 one = _mm256_set1_ps(1.f), sl = _mm256_set1_ps(slope), g = _mm256_set1_ps(gain);
  for (int64_t w = wb; w < we; ++w) {
    const uint32_t pos = uint32_t(mask[2 * w]), flow = uint32_t(mask[2 * w + 1]);
    for (int j = 0; j < 4; ++j) {
      const int64_t i = w * kMaskGroup + 8 * j;
      const __m256i pb = _mm256_and_si256(_mm256_set1_epi32(int((pos >> (8 * j)) & 0xFFu)), bit);
      const __m256i fb = _mm256_and_si256(_mm256_set1_epi32(int((flow >> (8 * j)) & 0xFFu)), bit);
      const __m256 p = _mm256_castsi256_ps(_mm256_cmpeq_epi32(pb, bit));
      const __m256 f = _mm256_castsi256_ps(_mm256_cmpeq_epi32(fb, bit));
      const __m256 d = _mm256_mul_ps(_mm256_loadu_ps(dy + i), _mm256_blendv_ps(sl, one, p));
      const __m256 v = _mm256_and_ps(_mm256_mul_ps(d, g), f);
      if (STREAM)
        _mm256_stream_ps(dx + i, v);
      else
        _mm256_storeu_ps(dx + i, v);
    }
  }
  if (STREAM) _mm_sfence();
}

// dx = dy * gain over [begin, end) (multiples of 8 elements): mode 1 of linear without a saved output.
template <bool STREAM>
__attribute__((target("avx2"))) void scale_avx2(const float* dy, int64_t begin, int64_t end, float gain, float* dx) {
  const __m256 g = _mm256_set1_ps(gain);
  for (int64_t i = begin; i < end; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(dy + i), g);
    if (STREAM)
      _mm256_stream_ps(dx + i, v);
    else
      _mm256_storeu_ps(dx + i, v);
  }
  if (STREAM) _mm_sfence();
}

// Outputs at least this large bypass the caches (non-temporal stores, no read-for-ownership): they would not
// stay cached for their consumer anyway, and a cached store costs a read plus a write of DRAM traffic.
constexpr int64_t kStreamBytes = int64_t(4) << 20;

inline bool stream_output(const void* out, int64_t numel) {
  return numel * int64_t(sizeof(float)) >= kStreamBytes && reinterpret_cast<uintptr_t>(out) % 32 == 0;
}

#endif

bool cpu_has_avx2() {
#if SUITE_OPS_X86
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
#else
  return false;
#endif
}

// Forward values of flat elements [begin, end), split at row boundaries so the bias is constant in each inner loop;
// CLAMP is a compile-time switch so the element math inlines branch-free and the loop vectorises (with
// -fno-trapping-math, setup.py).
template <int A, bool CLAMP, typename scalar_t, typename T>
void forward_range(const scalar_t* x, const scalar_t* b, int64_t inner, int64_t channels, int64_t begin, int64_t end,
                   T alpha, T gain, T clamp, scalar_t* y) {
  const T c = CLAMP ? clamp : T(-1);
  for (int64_t i = begin; i < end;) {
    const int64_t r = i / inner;
    const int64_t stop = std::min(end, (r + 1) * inner);
    const T bv = b ? T(b[r % channels]) : T(0);
    for (; i < stop; ++i) y[i] = scalar_t(bias_act_elem<A, 0, T>(T(x[i]) + bv, T(0), T(0), T(1), alpha, gain, c));
  }
}

template <typename scalar_t>
struct BiasActCpu {
  using T = at::opmath_type<scalar_t>;
  const scalar_t *xp, *bp, *xrp, *yrp, *dyp;
  scalar_t* yp;
  int64_t rows, inner, channels;
  T alpha, gain, clamp;

  // Loop over [begin, end) rows, CLAMP at compile time as in forward_range.
  template <int A, int G, bool CLAMP>
  void rows_loop(int64_t begin, int64_t end) const {
    if constexpr (G == 0) {  // forward: only x and b
      forward_range<A, CLAMP>(xp, bp, inner, channels, begin * inner, end * inner, alpha, gain, clamp, yp);
      return;
    }
    const T c = CLAMP ? clamp : T(-1);
    for (int64_t r = begin; r < end; ++r) {
      const T bv = bp ? T(bp[r % channels]) : T(0);
      for (int64_t i = r * inner; i < (r + 1) * inner; ++i) {
        const T xr = (xrp ? T(xrp[i]) : T(0)) + bv;
        const T yr = yrp ? T(yrp[i]) : T(0);
        const T d = dyp ? T(dyp[i]) : T(1);
        yp[i] = scalar_t(bias_act_elem<A, G, T>(T(xp[i]), xr, yr, d, alpha, gain, c));
      }
    }
  }

  // Mode 1 of linear, relu and lrelu without dy (docs/ops.md): the bias and xref do not enter, and only the
  // sign of the saved output matters, so one flat loop replaces bias_act_elem's per-element yref / gain by a
  // multiply with sign(gain) (gain 0 gives yref / gain = 0 there, here yref * 0 = 0: same branch).
  template <int A, bool CLAMP, bool HAS_Y>
  void grad1_loop(int64_t begin, int64_t end) const {
    const scalar_t* __restrict x = xp;
    const scalar_t* __restrict yr_p = yrp;
    scalar_t* __restrict y = yp;
    const T a = alpha, g = gain, c = CLAMP ? clamp : T(0);
    const T s = g > T(0) ? T(1) : (g < T(0) ? T(-1) : T(0));
    for (int64_t i = begin; i < end; ++i) {
      const T yr = HAS_Y ? T(yr_p[i]) : T(0);
      T v = T(x[i]);
      if (A == 2) v = (yr * s > T(0)) ? v : T(0);
      if (A == 3) v = (yr * s > T(0)) ? v : v * a;
      v = v * g;
      if (CLAMP) v = ((yr > -c) & (yr < c)) ? v : T(0);
      y[i] = scalar_t(v);
    }
  }

#if SUITE_OPS_X86
  template <int A, bool CLAMP, bool STREAM>
  void forward_groups(int64_t wb, int64_t we, float gain_sign) const {
    forward_avx2<A, CLAMP, STREAM, false>(xp, bp, inner, channels, wb, we, alpha, gain, gain_sign,
                                          CLAMP ? clamp : -1.f, yp, nullptr);
  }
#endif

  // fp32 linear/relu/lrelu on AVX2 CPUs: the forward as the masked path's loop without the mask, and mode 1 of
  // linear without a saved output as one scaling loop. Returns false where the generic loops must run.
  template <int A, int G>
  bool avx2_loops() const {
#if SUITE_OPS_X86
    if constexpr (std::is_same_v<scalar_t, float> && A <= 3) {
      if (!cpu_has_avx2()) return false;
      const int64_t numel = rows * inner;
      const bool stream = stream_output(yp, numel);
      if (G == 0 && inner % kMaskGroup == 0) {
        const float s = gain > 0.f ? 1.f : (gain < 0.f ? -1.f : 0.f);
        at::parallel_for(0, numel / kMaskGroup, 1024, [&](int64_t wb, int64_t we) {
          if (clamp >= 0.f)
            stream ? forward_groups<A, true, true>(wb, we, s) : forward_groups<A, true, false>(wb, we, s);
          else
            stream ? forward_groups<A, false, true>(wb, we, s) : forward_groups<A, false, false>(wb, we, s);
        });
        return true;
      }
      if (G == 1 && A == 1 && dyp == nullptr && yrp == nullptr) {
        at::parallel_for(0, numel / 8, 4096, [&](int64_t begin, int64_t end) {
          if (stream)
            scale_avx2<true>(xp, 8 * begin, 8 * end, gain, yp);
          else
            scale_avx2<false>(xp, 8 * begin, 8 * end, gain, yp);
        });
        for (int64_t i = numel / 8 * 8; i < numel; ++i) yp[i] = xp[i] * gain;
        return true;
      }
    }
#endif
    return false;
  }

  template <int A, int G>
  void operator()() const {
    if (avx2_loops<A, G>()) return;
    if constexpr (G == 1 && A <= 3) {
      if (dyp == nullptr) {
        at::parallel_for(0, rows * inner, 32768, [&](int64_t begin, int64_t end) {
          if (clamp >= T(0) && yrp)
            grad1_loop<A, true, true>(begin, end);
          else
            yrp ? grad1_loop<A, false, true>(begin, end) : grad1_loop<A, false, false>(begin, end);
        });
        return;
      }
    }
    // The derivatives mask clamped elements by the saved output only: without one, gradients pass the clamp.
    const bool clamp_mask = clamp >= T(0) && (G == 0 || yrp);
    at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / inner), [&](int64_t begin, int64_t end) {
      if (clamp_mask)
        rows_loop<A, G, true>(begin, end);
      else
        rows_loop<A, G, false>(begin, end);
    });
  }
};

at::Tensor bias_act_cpu(const at::Tensor& x_in, const c10::optional<at::Tensor>& b,
                        const c10::optional<at::Tensor>& xref, const c10::optional<at::Tensor>& yref,
                        const c10::optional<at::Tensor>& dy, int64_t grad, int64_t dim, int64_t act, double alpha,
                        double gain, double clamp, bool save_y) {
  (void)save_y;  // autograd-only flag
  bias_act_check(x_in, b, xref, yref, dy, grad, dim, act);
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t numel = x.numel();
  if (numel == 0) return y;
  const BiasActLayout layout = bias_act_layout(x, dim);
  const int64_t inner = layout.inner, channels = layout.channels;
  const int64_t rows = numel / inner;
  const at::Tensor bc = b.has_value() ? b->contiguous() : at::Tensor();
  const at::Tensor xrc = xref.has_value() ? xref->contiguous() : at::Tensor();
  const at::Tensor yrc = yref.has_value() ? yref->contiguous() : at::Tensor();
  const at::Tensor dyc = dy.has_value() ? dy->contiguous() : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "suite_ops::bias_act_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const BiasActCpu<scalar_t> run{x.const_data_ptr<scalar_t>(),
                                   bc.defined() ? bc.const_data_ptr<scalar_t>() : nullptr,
                                   xrc.defined() ? xrc.const_data_ptr<scalar_t>() : nullptr,
                                   yrc.defined() ? yrc.const_data_ptr<scalar_t>() : nullptr,
                                   dyc.defined() ? dyc.const_data_ptr<scalar_t>() : nullptr,
                                   y.mutable_data_ptr<scalar_t>(),
                                   rows,
                                   inner,
                                   channels,
                                   T(alpha),
                                   T(gain),
                                   T(clamp)};
    dispatch_act(act, grad, run);
  });
  return y;
}

// ------------------------------------------------------------------------------------------ masked path
// fp32 on AVX2 CPUs runs forward_avx2 / masked_grad_avx2 (other CPUs never take the masked path, see
// ops/bias_act.py); other dtypes, rows that are not whole groups and the tail group run the scalar loops.

// Mask words of n <= 32 stored outputs y (bias_act_math.h).
template <int A, typename scalar_t, typename T>
inline void pack_mask(const scalar_t* y, int64_t n, T gain_sign, T clamp, int32_t* words) {
  uint32_t pos = 0, flow = 0;
  for (int64_t k = 0; k < n; ++k) {
    bool p, f;
    mask_bits<A>(T(y[k]), gain_sign, clamp, p, f);
    pos |= uint32_t(p) << k;
    flow |= uint32_t(f) << k;
  }
  words[0] = int32_t(pos);
  words[1] = int32_t(flow);
}

template <typename scalar_t, typename T>
inline void unpack_grad(const scalar_t* dy, const int32_t* words, int64_t n, T slope, T gain, scalar_t* dx) {
  const uint32_t pos = uint32_t(words[0]), flow = uint32_t(words[1]);
  for (int64_t k = 0; k < n; ++k)
    dx[k] = scalar_t(masked_grad_elem(T(dy[k]), bool((pos >> k) & 1u), bool((flow >> k) & 1u), slope, gain));
}

template <typename scalar_t>
struct BiasActMaskedCpu {
  using T = at::opmath_type<scalar_t>;
  const scalar_t *xp, *bp;
  scalar_t* yp;
  int32_t* mp;
  int64_t numel, inner, channels;
  T alpha, gain, clamp;

  // Groups [wb, we): the fused AVX2 pass, or forward_range over 64 groups at a time and then their mask words
  // while they are in L1.
  template <int A, bool CLAMP>
  void words(int64_t wb, int64_t we) const {
    const T s = gain > T(0) ? T(1) : (gain < T(0) ? T(-1) : T(0));
    const T c = CLAMP ? clamp : T(-1);
#if SUITE_OPS_X86
    if constexpr (std::is_same_v<scalar_t, float>) {
      const int64_t full = std::min(we, numel / kMaskGroup);
      if (inner % kMaskGroup == 0 && cpu_has_avx2() && wb < full) {
        if (stream_output(yp, numel))
          forward_avx2<A, CLAMP, true, true>(xp, bp, inner, channels, wb, full, alpha, gain, s, c, yp, mp);
        else
          forward_avx2<A, CLAMP, false, true>(xp, bp, inner, channels, wb, full, alpha, gain, s, c, yp, mp);
        wb = full;
      }
    }
#endif
    for (int64_t w0 = wb; w0 < we; w0 += 64) {
      const int64_t w1 = std::min(we, w0 + 64);
      forward_range<A, CLAMP>(xp, bp, inner, channels, w0 * kMaskGroup, std::min(numel, w1 * kMaskGroup), alpha, gain,
                              clamp, yp);
      for (int64_t w = w0; w < w1; ++w) {
        const int64_t i = w * kMaskGroup;
        pack_mask<A>(yp + i, std::min(kMaskGroup, numel - i), s, c, mp + 2 * w);
      }
    }
  }

  template <int A>
  void run() const {
    at::parallel_for(0, mask_words(numel) / 2, 1024, [&](int64_t wb, int64_t we) {
      clamp >= T(0) ? words<A, true>(wb, we) : words<A, false>(wb, we);
    });
  }
};

std::tuple<at::Tensor, at::Tensor> bias_act_masked_cpu(const at::Tensor& x_in, const c10::optional<at::Tensor>& b,
                                                       int64_t dim, int64_t act, double alpha, double gain,
                                                       double clamp) {
  const BiasActMaskedArgs args = bias_act_masked_prepare(x_in, b, dim, act);
  const at::Tensor &x = args.x, &bc = args.b, &y = args.y, &mask = args.mask;
  if (x.numel() == 0) return {y, mask};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "suite_ops::bias_act_masked_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const BiasActMaskedCpu<scalar_t> run{x.const_data_ptr<scalar_t>(),
                                         bc.defined() ? bc.const_data_ptr<scalar_t>() : nullptr,
                                         y.mutable_data_ptr<scalar_t>(),
                                         mask.mutable_data_ptr<int32_t>(),
                                         x.numel(),
                                         args.layout.inner,
                                         args.layout.channels,
                                         T(alpha),
                                         T(gain),
                                         T(clamp)};
    if (act == 1) run.template run<1>();
    if (act == 2) run.template run<2>();
    if (act == 3) run.template run<3>();
  });
  return {y, mask};
}

template <typename scalar_t, typename T>
void masked_grad_loop(const scalar_t* dyp, const int32_t* mp, int64_t numel, T slope, T gain, scalar_t* dxp) {
  at::parallel_for(0, mask_words(numel) / 2, 1024, [&](int64_t wb, int64_t we) {
#if SUITE_OPS_X86
    if constexpr (std::is_same_v<scalar_t, float>) {
      const int64_t full = std::min(we, numel / kMaskGroup);
      if (cpu_has_avx2() && wb < full) {
        if (stream_output(dxp, numel))
          masked_grad_avx2<true>(dyp, mp, wb, full, slope, gain, dxp);
        else
          masked_grad_avx2<false>(dyp, mp, wb, full, slope, gain, dxp);
        wb = full;
      }
    }
#endif
    for (int64_t w = wb; w < we; ++w) {
      const int64_t i = w * kMaskGroup;
      unpack_grad(dyp + i, mp + 2 * w, std::min(kMaskGroup, numel - i), slope, gain, dxp + i);
    }
  });
}

at::Tensor bias_act_masked_grad_cpu(const at::Tensor& dy_in, const at::Tensor& mask, int64_t act, double alpha,
                                    double gain) {
  bias_act_masked_grad_check(dy_in, mask, act);
  const at::Tensor dy = dy_in.contiguous();
  at::Tensor dx = at::empty_like(dy, at::MemoryFormat::Contiguous);
  if (dy.numel() == 0) return dx;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "suite_ops::bias_act_masked_grad", [&] {
    using T = at::opmath_type<scalar_t>;
    masked_grad_loop(dy.const_data_ptr<scalar_t>(), mask.const_data_ptr<int32_t>(), dy.numel(),
                     masked_neg_slope(act, T(alpha)), T(gain), dx.mutable_data_ptr<scalar_t>());
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(suite_ops, CPU, m) {
  m.impl("bias_act", &bias_act_cpu);
  m.impl("bias_act_masked", &bias_act_masked_cpu);
  m.impl("bias_act_masked_grad", &bias_act_masked_grad_cpu);
}

TORCH_LIBRARY_FRAGMENT(suite_ops, m) { m.def("cpu_has_avx2() -> bool", &cpu_has_avx2); }

}  // namespace suite_ops
