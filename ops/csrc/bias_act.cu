// CUDA kernel of suite_ops::bias_act (specs/ops.md §3): one thread per element (grid-stride), same element
// math as the CPU kernel (bias_act_math.h). fp32, fp64, fp16, bf16; 64-bit indexing.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "bias_act_math.h"
#include "common.h"

namespace suite_ops {
namespace {

template <int A, int G, typename scalar_t>
__global__ void bias_act_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                const scalar_t* __restrict__ xref, const scalar_t* __restrict__ yref,
                                const scalar_t* __restrict__ dy, scalar_t* __restrict__ y, int64_t numel,
                                int64_t inner, int64_t channels, float alpha, float gain, float clamp) {
  using T = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < numel; i += (int64_t)gridDim.x * blockDim.x) {
    const T bv = b ? T(b[(i / inner) % channels]) : T(0);
    const T xv = T(x[i]) + (G == 0 ? bv : T(0));
    const T xr = (xref ? T(xref[i]) : T(0)) + bv;
    const T yr = yref ? T(yref[i]) : T(0);
    const T d = dy ? T(dy[i]) : T(1);
    y[i] = scalar_t(bias_act_elem<A, G, T>(xv, xr, yr, d, T(alpha), T(gain), T(clamp)));
  }
}

template <typename scalar_t>
struct BiasActCuda {
  const scalar_t *x, *b, *xref, *yref, *dy;
  scalar_t* y;
  int64_t numel, inner, channels;
  float alpha, gain, clamp;

  template <int A, int G>
  void operator()() const {
    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((numel + threads - 1) / threads, int64_t(1) << 20);
    bias_act_kernel<A, G, scalar_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x, b, xref, yref, dy, y, numel, inner, channels, alpha, gain, clamp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

at::Tensor bias_act_cuda(const at::Tensor& x_in, const c10::optional<at::Tensor>& b,
                         const c10::optional<at::Tensor>& xref, const c10::optional<at::Tensor>& yref,
                         const c10::optional<at::Tensor>& dy, int64_t grad, int64_t dim, int64_t act, double alpha,
                         double gain, double clamp, bool save_y) {
  (void)save_y;  // autograd-only flag
  bias_act_check(x_in, b, xref, yref, dy, grad, dim, act);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (x.numel() == 0) return y;
  int64_t inner = 1;
  for (int64_t i = dim + 1; i < x.dim(); ++i) inner *= x.size(i);
  const int64_t channels = x.dim() > 0 ? x.size(dim) : 1;
  const at::Tensor bc = b.has_value() ? b->contiguous() : at::Tensor();
  const at::Tensor xrc = xref.has_value() ? xref->contiguous() : at::Tensor();
  const at::Tensor yrc = yref.has_value() ? yref->contiguous() : at::Tensor();
  const at::Tensor dyc = dy.has_value() ? dy->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "suite_ops::bias_act_cuda", [&] {
    const BiasActCuda<scalar_t> run{x.const_data_ptr<scalar_t>(),
                                    bc.defined() ? bc.const_data_ptr<scalar_t>() : nullptr,
                                    xrc.defined() ? xrc.const_data_ptr<scalar_t>() : nullptr,
                                    yrc.defined() ? yrc.const_data_ptr<scalar_t>() : nullptr,
                                    dyc.defined() ? dyc.const_data_ptr<scalar_t>() : nullptr,
                                    y.mutable_data_ptr<scalar_t>(),
                                    x.numel(),
                                    inner,
                                    channels,
                                    static_cast<float>(alpha),
                                    static_cast<float>(gain),
                                    static_cast<float>(clamp)};
    dispatch_act(act, grad, run);
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(suite_ops, CUDA, m) { m.impl("bias_act", &bias_act_cuda); }

}  // namespace suite_ops
