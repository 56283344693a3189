// CUDA kernel of suite_ops::upfirdn2d (NVlabs torch_utils/ops/upfirdn2d.py): one thread per output element,
// polyphase taps (only the filter taps that hit an input pixel are visited). fp32, fp64, fp16, bf16; 64-bit indexing.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common.h"

namespace suite_ops {
namespace {

__device__ inline int64_t floor_div(int64_t a, int64_t b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }

template <typename scalar_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f,
                                 scalar_t* __restrict__ y, int64_t total, int64_t in_h, int64_t in_w, int64_t out_h,
                                 int64_t out_w, int64_t fh, int64_t fw, int64_t upx, int64_t upy, int64_t downx,
                                 int64_t downy, int64_t padx0, int64_t pady0, bool flip, float gain) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ox = i % out_w, oy = (i / out_w) % out_h, plane = i / (out_w * out_h);
    const scalar_t* src = x + plane * in_h * in_w;
    const int64_t py = oy * downy - pady0, px = ox * downx - padx0;
    // First tap ky with (py + ky) divisible by upy, then every upy-th.
    const int64_t ky0 = ((-py) % upy + upy) % upy, kx0 = ((-px) % upx + upx) % upx;
    acc_t acc = 0;
    for (int64_t ky = ky0; ky < fh; ky += upy) {
      const int64_t iy = floor_div(py + ky, upy);
      if (iy < 0 || iy >= in_h) continue;
      const int64_t fy = flip ? ky : fh - 1 - ky;
      for (int64_t kx = kx0; kx < fw; kx += upx) {
        const int64_t ix = floor_div(px + kx, upx);
        if (ix < 0 || ix >= in_w) continue;
        const int64_t fx = flip ? kx : fw - 1 - kx;
        acc += static_cast<acc_t>(f[fy * fw + fx]) * static_cast<acc_t>(src[iy * in_w + ix]);
      }
    }
    y[i] = static_cast<scalar_t>(acc * static_cast<acc_t>(gain));
  }
}

at::Tensor upfirdn2d_cuda(const at::Tensor& x_in, const at::Tensor& f_in, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip,
                          double gain) {
  const auto shape = upfirdn2d_check(x_in, f_in, upx, upy, downx, downy, padx0, padx1, pady0, pady1);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), f = f_in.contiguous();
  at::Tensor y = at::empty({x.size(0), x.size(1), shape.out_h, shape.out_w}, x.options());
  const int64_t total = y.numel();
  if (total == 0) return y;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, int64_t(1) << 20);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "suite_ops::upfirdn2d_cuda", [&] {
    upfirdn2d_kernel<scalar_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), f.const_data_ptr<float>(), y.mutable_data_ptr<scalar_t>(), total, x.size(2),
        x.size(3), shape.out_h, shape.out_w, f.size(0), f.size(1), upx, upy, downx, downy, padx0, pady0, flip,
        static_cast<float>(gain));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(suite_ops, CUDA, m) { m.impl("upfirdn2d", &upfirdn2d_cuda); }

}  // namespace suite_ops
