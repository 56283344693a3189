// CUDA kernels of suite_ops::grid_sample_2d and its backward (NVlabs grid_sample_gradfix.py): bilinear, zeros padding,
// align_corners=False. One thread per output pixel looping over channels; the input gradient is scattered with
// atomics. fp32, fp64, fp16, bf16; 64-bit indexing.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "common.h"

namespace suite_ops {
namespace {

template <typename T>
struct Bilinear {
  int64_t idx[4];
  T w[4];
  bool valid[4];
  T wx1, wy1;
};

template <typename T, typename scalar_t>
__device__ inline Bilinear<T> bilinear(const scalar_t* g, int64_t h, int64_t w) {
  const T ix = grid_unnormalize<T>(T(g[0]), w), iy = grid_unnormalize<T>(T(g[1]), h);
  const T fx = floor(ix), fy = floor(iy);
  const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  Bilinear<T> c;
  c.wx1 = ix - fx;
  c.wy1 = iy - fy;
  const T wx[2] = {T(1) - c.wx1, c.wx1}, wy[2] = {T(1) - c.wy1, c.wy1};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int64_t xx = x0 + (k & 1), yy = y0 + (k >> 1);
    c.valid[k] = xx >= 0 && xx < w && yy >= 0 && yy < h;
    c.idx[k] = c.valid[k] ? yy * w + xx : 0;
    c.w[k] = c.valid[k] ? wx[k & 1] * wy[k >> 1] : T(0);
  }
  return c;
}

template <typename scalar_t>
__global__ void grid_sample_fwd_kernel(const scalar_t* __restrict__ input, const scalar_t* __restrict__ grid,
                                       scalar_t* __restrict__ out, int64_t n, int64_t ch, int64_t h, int64_t w,
                                       int64_t np) {
  using T = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * np; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = i / np, p = i % np;
    const Bilinear<T> c = bilinear<T>(grid + 2 * i, h, w);
    for (int64_t k = 0; k < ch; ++k) {
      const scalar_t* src = input + (s * ch + k) * h * w;
      out[(s * ch + k) * np + p] = scalar_t(c.w[0] * T(src[c.idx[0]]) + c.w[1] * T(src[c.idx[1]]) +
                                            c.w[2] * T(src[c.idx[2]]) + c.w[3] * T(src[c.idx[3]]));
    }
  }
}

template <typename scalar_t>
__global__ void grid_sample_bwd_kernel(const scalar_t* __restrict__ go, const scalar_t* __restrict__ input,
                                       const scalar_t* __restrict__ grid, scalar_t* __restrict__ gi,
                                       scalar_t* __restrict__ gg, int64_t n, int64_t ch, int64_t h, int64_t w,
                                       int64_t np) {
  using T = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * np; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = i / np, p = i % np;
    const Bilinear<T> c = bilinear<T>(grid + 2 * i, h, w);
    T dx = 0, dyy = 0;
    for (int64_t k = 0; k < ch; ++k) {
      const int64_t plane = (s * ch + k) * h * w;
      const T g = T(go[(s * ch + k) * np + p]);
      if (gi) {
#pragma unroll
        for (int q = 0; q < 4; ++q)
          if (c.valid[q]) gpuAtomicAdd(gi + plane + c.idx[q], scalar_t(c.w[q] * g));
      }
      if (gg) {
        const scalar_t* src = input + plane;
        const T v00 = c.valid[0] ? T(src[c.idx[0]]) : T(0), v01 = c.valid[1] ? T(src[c.idx[1]]) : T(0);
        const T v10 = c.valid[2] ? T(src[c.idx[2]]) : T(0), v11 = c.valid[3] ? T(src[c.idx[3]]) : T(0);
        dx += g * ((v01 - v00) * (T(1) - c.wy1) + (v11 - v10) * c.wy1);
        dyy += g * ((v10 - v00) * (T(1) - c.wx1) + (v11 - v01) * c.wx1);
      }
    }
    if (gg) {
      gg[2 * i] = scalar_t(dx * T(w) / T(2));
      gg[2 * i + 1] = scalar_t(dyy * T(h) / T(2));
    }
  }
}

inline int64_t num_blocks(int64_t total, int threads) {
  return std::max<int64_t>(1, std::min<int64_t>((total + threads - 1) / threads, int64_t(1) << 20));
}

at::Tensor grid_sample_2d_cuda(const at::Tensor& input_in, const at::Tensor& grid_in) {
  grid_sample_check(input_in, grid_in);
  const c10::cuda::CUDAGuard guard(input_in.device());
  const at::Tensor input = input_in.contiguous(), grid = grid_in.contiguous();
  const int64_t n = input.size(0), ch = input.size(1), h = input.size(2), w = input.size(3);
  const int64_t np = grid.size(1) * grid.size(2);
  at::Tensor out = at::empty({n, ch, grid.size(1), grid.size(2)}, input.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "suite_ops::grid_sample_cuda", [&] {
    grid_sample_fwd_kernel<scalar_t><<<num_blocks(n * np, 256), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        input.const_data_ptr<scalar_t>(), grid.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n, ch,
        h, w, np);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> grid_sample_2d_backward_cuda(const at::Tensor& grad_in,
                                                                const at::Tensor& input_in,
                                                                const at::Tensor& grid_in, bool input_grad,
                                                                bool grid_grad) {
  grid_sample_check(input_in, grid_in);
  const c10::cuda::CUDAGuard guard(input_in.device());
  const at::Tensor input = input_in.contiguous(), grid = grid_in.contiguous(), go = grad_in.contiguous();
  const int64_t n = input.size(0), ch = input.size(1), h = input.size(2), w = input.size(3);
  const int64_t np = grid.size(1) * grid.size(2);
  TORCH_CHECK(go.sizes() == at::IntArrayRef({n, ch, grid.size(1), grid.size(2)}),
              "suite_ops::grid_sample_2d_backward: grad_out shape ", go.sizes(), " does not match the output");
  at::Tensor gi = input_grad ? at::zeros_like(input) : at::empty({0}, input.options());
  at::Tensor gg = grid_grad ? at::zeros_like(grid) : at::empty({0}, grid.options());
  if (go.numel() == 0) return {gi, gg};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "suite_ops::grid_sample_bwd", [&] {
    grid_sample_bwd_kernel<scalar_t><<<num_blocks(n * np, 256), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        go.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(), grid.const_data_ptr<scalar_t>(),
        input_grad ? gi.mutable_data_ptr<scalar_t>() : nullptr, grid_grad ? gg.mutable_data_ptr<scalar_t>() : nullptr,
        n, ch, h, w, np);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gi, gg};
}

}  // namespace

TORCH_LIBRARY_IMPL(suite_ops, CUDA, m) {
  m.impl("grid_sample_2d", &grid_sample_2d_cuda);
  m.impl("grid_sample_2d_backward", &grid_sample_2d_backward_cuda);
}

}  // namespace suite_ops
