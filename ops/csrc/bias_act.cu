// CUDA kernel of suite_ops::bias_act (NVlabs stylegan2-ada-pytorch torch_utils/ops/bias_act.py): one thread per
// element (grid-stride), same element math as the CPU kernel (bias_act_math.h). fp32, fp64, fp16, bf16; 64-bit
// indexing.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "bias_act_math.h"
#include "common.h"

namespace suite_ops {
namespace {

int64_t elementwise_blocks(int64_t numel, int threads) {
  return std::min<int64_t>((numel + threads - 1) / threads, int64_t(1) << 20);
}

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
    const int64_t blocks = elementwise_blocks(numel, threads);
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
  const BiasActLayout layout = bias_act_layout(x, dim);
  const int64_t inner = layout.inner, channels = layout.channels;
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
                                    // the derivatives mask clamped elements by the saved output only
                                    grad > 0 && !yref.has_value() ? -1.f : static_cast<float>(clamp)};
    dispatch_act(act, grad, run);
  });
  return y;
}

// Masked path (bias_act_math.h): one thread per element; a warp covers one 32-element mask group, whose two
// words are the warp's ballots of the stored output's bits. The loop bound is warp-uniform (base is the
// warp's first element), so every lane reaches the ballots.
template <int A, typename scalar_t>
__global__ void bias_act_masked_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                       scalar_t* __restrict__ y, int32_t* __restrict__ mask, int64_t numel,
                                       int64_t inner, int64_t channels, float alpha, float gain, float clamp) {
  using T = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x & 31;
  const T gain_sign = gain > 0.f ? T(1) : (gain < 0.f ? T(-1) : T(0));
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t base = blockIdx.x * (int64_t)blockDim.x + threadIdx.x - lane; base < numel; base += stride) {
    const int64_t i = base + lane;
    bool positive = false, flows = false;
    if (i < numel) {
      const T bv = b ? T(b[(i / inner) % channels]) : T(0);
      const scalar_t v = scalar_t(bias_act_elem<A, 0, T>(T(x[i]) + bv, T(0), T(0), T(1), T(alpha), T(gain), T(clamp)));
      y[i] = v;
      mask_bits<A>(T(v), gain_sign, T(clamp), positive, flows);
    }
    const unsigned pos_word = __ballot_sync(0xffffffffu, positive);
    const unsigned flow_word = __ballot_sync(0xffffffffu, flows);
    if (lane == 0) {
      mask[2 * (base / kMaskGroup)] = int32_t(pos_word);
      mask[2 * (base / kMaskGroup) + 1] = int32_t(flow_word);
    }
  }
}

template <typename scalar_t>
__global__ void bias_act_masked_grad_kernel(const scalar_t* __restrict__ dy, const int32_t* __restrict__ mask,
                                            scalar_t* __restrict__ dx, int64_t numel, float slope, float gain) {
  using T = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < numel; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t w = 2 * (i / kMaskGroup);
    const int k = int(i % kMaskGroup);
    const bool positive = (uint32_t(mask[w]) >> k) & 1u, flows = (uint32_t(mask[w + 1]) >> k) & 1u;
    dx[i] = scalar_t(masked_grad_elem(T(dy[i]), positive, flows, T(slope), T(gain)));
  }
}

std::tuple<at::Tensor, at::Tensor> bias_act_masked_cuda(const at::Tensor& x_in, const c10::optional<at::Tensor>& b,
                                                        int64_t dim, int64_t act, double alpha, double gain,
                                                        double clamp) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const BiasActMaskedArgs args = bias_act_masked_prepare(x_in, b, dim, act);
  const at::Tensor &x = args.x, &bc = args.b, &y = args.y, &mask = args.mask;
  if (x.numel() == 0) return {y, mask};
  const int64_t inner = args.layout.inner, channels = args.layout.channels;
  const int threads = 256;  // a multiple of the warp size: every warp starts at a mask-group boundary
  const int64_t blocks = elementwise_blocks(x.numel(), threads);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "suite_ops::bias_act_masked_cuda", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* bp = bc.defined() ? bc.const_data_ptr<scalar_t>() : nullptr;
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    int32_t* mp = mask.mutable_data_ptr<int32_t>();
    const float a = float(alpha), g = float(gain), c = float(clamp);
    if (act == 1)
      bias_act_masked_kernel<1><<<blocks, threads, 0, stream>>>(xp, bp, yp, mp, x.numel(), inner, channels, a, g, c);
    if (act == 2)
      bias_act_masked_kernel<2><<<blocks, threads, 0, stream>>>(xp, bp, yp, mp, x.numel(), inner, channels, a, g, c);
    if (act == 3)
      bias_act_masked_kernel<3><<<blocks, threads, 0, stream>>>(xp, bp, yp, mp, x.numel(), inner, channels, a, g, c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, mask};
}

at::Tensor bias_act_masked_grad_cuda(const at::Tensor& dy_in, const at::Tensor& mask, int64_t act, double alpha,
                                     double gain) {
  bias_act_masked_grad_check(dy_in, mask, act);
  const c10::cuda::CUDAGuard guard(dy_in.device());
  const at::Tensor dy = dy_in.contiguous();
  at::Tensor dx = at::empty_like(dy, at::MemoryFormat::Contiguous);
  if (dy.numel() == 0) return dx;
  const float slope = masked_neg_slope(act, float(alpha));
  const int threads = 256;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "suite_ops::bias_act_masked_grad", [&] {
    bias_act_masked_grad_kernel<scalar_t>
        <<<elementwise_blocks(dy.numel(), threads), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            dy.const_data_ptr<scalar_t>(), mask.const_data_ptr<int32_t>(), dx.mutable_data_ptr<scalar_t>(),
            dy.numel(), slope, float(gain));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(suite_ops, CUDA, m) {
  m.impl("bias_act", &bias_act_cuda);
  m.impl("bias_act_masked", &bias_act_masked_cuda);
  m.impl("bias_act_masked_grad", &bias_act_masked_grad_cuda);
}

}  // namespace suite_ops
