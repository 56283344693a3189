// CPU kernel of suite_ops::bias_act (specs/ops.md §3): one fused pass, parallel over [outer, C] rows of the
// contiguous tensor viewed as [outer, C, inner] (C = x.shape[dim]), activation and mode resolved at compile time.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "bias_act_math.h"
#include "common.h"

namespace suite_ops {
namespace {

template <typename scalar_t>
struct BiasActCpu {
  using T = at::opmath_type<scalar_t>;
  const scalar_t *xp, *bp, *xrp, *yrp, *dyp;
  scalar_t* yp;
  int64_t rows, inner, channels;
  T alpha, gain, clamp;

  // Loop over [begin, end) rows; CLAMP is a compile-time switch so the element math inlines branch-free and the
  // inner loop vectorises (with -fno-trapping-math, setup.py).
  template <int A, int G, bool CLAMP>
  void rows_loop(int64_t begin, int64_t end) const {
    const T c = CLAMP ? clamp : T(-1);
    for (int64_t r = begin; r < end; ++r) {
      const T bv = bp ? T(bp[r % channels]) : T(0);
      const int64_t o = r * inner;
      if (G == 0) {  // forward: only x and b
        for (int64_t i = o; i < o + inner; ++i)
          yp[i] = scalar_t(bias_act_elem<A, 0, T>(T(xp[i]) + bv, T(0), T(0), T(1), alpha, gain, c));
      } else {
        for (int64_t i = o; i < o + inner; ++i) {
          const T xr = (xrp ? T(xrp[i]) : T(0)) + bv;
          const T yr = yrp ? T(yrp[i]) : T(0);
          const T d = dyp ? T(dyp[i]) : T(1);
          yp[i] = scalar_t(bias_act_elem<A, G, T>(T(xp[i]), xr, yr, d, alpha, gain, c));
        }
      }
    }
  }

  // Mode 1 of linear, relu and lrelu without dy (specs/ops.md §3.3): the bias and xref do not enter, and only the
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

  template <int A, int G>
  void operator()() const {
    if constexpr (G == 1 && A <= 3) {
      if (dyp == nullptr) {
        at::parallel_for(0, rows * inner, 32768, [&](int64_t begin, int64_t end) {
          if (clamp >= T(0))
            yrp ? grad1_loop<A, true, true>(begin, end) : grad1_loop<A, true, false>(begin, end);
          else
            yrp ? grad1_loop<A, false, true>(begin, end) : grad1_loop<A, false, false>(begin, end);
        });
        return;
      }
    }
    at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / inner), [&](int64_t begin, int64_t end) {
      if (clamp >= T(0))
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
  const int64_t channels = x.dim() > 0 ? x.size(dim) : 1;
  int64_t inner = 1;
  for (int64_t i = dim + 1; i < x.dim(); ++i) inner *= x.size(i);
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

}  // namespace

TORCH_LIBRARY_IMPL(suite_ops, CPU, m) { m.impl("bias_act", &bias_act_cpu); }

}  // namespace suite_ops
