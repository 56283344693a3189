// CUDA kernels of suite_ops::volume_sample_3d, its backward and its double backward (semantics in
// volume_sample.h). One thread per point looping over the channels; volume-shaped gradients are scattered with
// atomics. fp32, fp64, fp16, bf16 (opmath accumulation); 64-bit indexing.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "volume_sample.h"

namespace suite_ops {
namespace {

template <typename scalar_t>
__global__ void volume_sample_fwd_kernel(const scalar_t* __restrict__ volume, const scalar_t* __restrict__ points,
                                         scalar_t* __restrict__ out, int64_t n, int64_t ch, int64_t d, int64_t h,
                                         int64_t w, int64_t np) {
  using T = at::opmath_type<scalar_t>;
  const int64_t nv = d * h * w;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * np; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = i / np, p = i % np;
    const Trilinear<T> t = trilinear<T>(points + 3 * i, d, h, w);
    T wk[8];
    trilinear_weights(t, wk);
    for (int64_t c = 0; c < ch; ++c) {
      const scalar_t* src = volume + (s * ch + c) * nv;
      T acc = T(0);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc += wk[k] * T(src[t.idx[k]]);
      out[(s * ch + c) * np + p] = scalar_t(acc);
    }
  }
}

template <typename scalar_t>
__global__ void volume_sample_bwd_kernel(const scalar_t* __restrict__ go, const scalar_t* __restrict__ volume,
                                         const scalar_t* __restrict__ points, scalar_t* __restrict__ gv,
                                         scalar_t* __restrict__ gp, int64_t n, int64_t ch, int64_t d, int64_t h,
                                         int64_t w, int64_t np) {
  using T = at::opmath_type<scalar_t>;
  const int64_t nv = d * h * w;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * np; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = i / np, p = i % np;
    const Trilinear<T> t = trilinear<T>(points + 3 * i, d, h, w);
    T wk[8];
    trilinear_weights(t, wk);
    T acc[3] = {T(0), T(0), T(0)};
    for (int64_t c = 0; c < ch; ++c) {
      const int64_t plane = (s * ch + c) * nv;
      const T g = T(go[(s * ch + c) * np + p]);
      if (gv) {
#pragma unroll
        for (int k = 0; k < 8; ++k) gpuAtomicAdd(gv + plane + t.idx[k], scalar_t(wk[k] * g));
      }
      if (gp) {
        T v[8], gr[3];
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = T(volume[plane + t.idx[k]]);
        trilinear_grad(t, v, gr);
#pragma unroll
        for (int a = 0; a < 3; ++a) acc[a] += g * gr[a];
      }
    }
    if (gp) {
#pragma unroll
      for (int a = 0; a < 3; ++a) gp[3 * i + a] = scalar_t(acc[a]);
    }
  }
}

template <typename scalar_t>
__global__ void volume_sample_bwd2_kernel(const scalar_t* __restrict__ go, const scalar_t* __restrict__ volume,
                                          const scalar_t* __restrict__ points, const scalar_t* __restrict__ uu,
                                          const scalar_t* __restrict__ dirs, scalar_t* __restrict__ d_go,
                                          scalar_t* __restrict__ d_v, scalar_t* __restrict__ d_p, int64_t n,
                                          int64_t ch, int64_t d, int64_t h, int64_t w, int64_t np) {
  using T = at::opmath_type<scalar_t>;
  const int64_t nv = d * h * w;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n * np; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t s = i / np, p = i % np;
    const Trilinear<T> t = trilinear<T>(points + 3 * i, d, h, w);
    T wk[8], dk[8];
    trilinear_weights(t, wk);
    T u[3] = {T(0), T(0), T(0)};
    if (dirs) {
#pragma unroll
      for (int a = 0; a < 3; ++a) u[a] = T(dirs[3 * i + a]);
      trilinear_dir_weights(t, u, dk);
    }
    T acc[3] = {T(0), T(0), T(0)};
    for (int64_t c = 0; c < ch; ++c) {
      const int64_t plane = (s * ch + c) * nv, out_idx = (s * ch + c) * np + p;
      const T g = T(go[out_idx]);
      T v[8], uv[8];
      if (dirs) {
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = T(volume[plane + t.idx[k]]);
      }
      if (uu) {
#pragma unroll
        for (int k = 0; k < 8; ++k) uv[k] = T(uu[plane + t.idx[k]]);
      }
      if (d_go) {
        T val = T(0);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          if (uu) val += wk[k] * uv[k];
          if (dirs) val += dk[k] * v[k];
        }
        d_go[out_idx] = scalar_t(val);
      }
      if (d_v && dirs) {
#pragma unroll
        for (int k = 0; k < 8; ++k) gpuAtomicAdd(d_v + plane + t.idx[k], scalar_t(dk[k] * g));
      }
      if (d_p) {
        if (uu) {
          T gr[3];
          trilinear_grad(t, uv, gr);
#pragma unroll
          for (int a = 0; a < 3; ++a) acc[a] += g * gr[a];
        }
        if (dirs) {
          T hs[3];  // xy, xz, yz
          trilinear_hess(t, v, hs);
          acc[0] += g * (hs[0] * u[1] + hs[1] * u[2]);
          acc[1] += g * (hs[0] * u[0] + hs[2] * u[2]);
          acc[2] += g * (hs[1] * u[0] + hs[2] * u[1]);
        }
      }
    }
    if (d_p) {
#pragma unroll
      for (int a = 0; a < 3; ++a) d_p[3 * i + a] = scalar_t(acc[a]);
    }
  }
}

inline int64_t num_blocks(int64_t total, int threads) {
  return std::max<int64_t>(1, std::min<int64_t>((total + threads - 1) / threads, int64_t(1) << 20));
}

at::Tensor volume_sample_3d_cuda(const at::Tensor& volume_in, const at::Tensor& points_in) {
  volume_sample_check(volume_in, points_in, "suite_ops::volume_sample_3d");
  const c10::cuda::CUDAGuard guard(volume_in.device());
  const at::Tensor volume = volume_in.contiguous(), points = points_in.contiguous();
  const int64_t n = volume.size(0), ch = volume.size(1), np = points.size(1);
  at::Tensor out = at::empty({n, ch, np}, volume.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, volume.scalar_type(), "suite_ops::volume_sample_cuda", [&] {
    volume_sample_fwd_kernel<scalar_t><<<num_blocks(n * np, 256), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        volume.const_data_ptr<scalar_t>(), points.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), n,
        ch, volume.size(2), volume.size(3), volume.size(4), np);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> volume_sample_3d_backward_cuda(const at::Tensor& grad_in,
                                                                  const at::Tensor& volume_in,
                                                                  const at::Tensor& points_in, bool volume_grad,
                                                                  bool points_grad) {
  const char* op_name = "suite_ops::volume_sample_3d_backward";
  volume_sample_check(volume_in, points_in, op_name);
  const c10::cuda::CUDAGuard guard(volume_in.device());
  const at::Tensor volume = volume_in.contiguous(), points = points_in.contiguous(), go = grad_in.contiguous();
  const int64_t n = volume.size(0), ch = volume.size(1), np = points.size(1);
  volume_sample_check_like(go, {n, ch, np}, volume, op_name, "grad_out");
  at::Tensor gv = volume_grad ? at::zeros_like(volume) : at::empty({0}, volume.options());
  at::Tensor gp = points_grad ? at::zeros_like(points) : at::empty({0}, points.options());
  if (go.numel() == 0 || !(volume_grad || points_grad)) return {gv, gp};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, volume.scalar_type(), "suite_ops::volume_sample_bwd", [&] {
    volume_sample_bwd_kernel<scalar_t><<<num_blocks(n * np, 256), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        go.const_data_ptr<scalar_t>(), volume.const_data_ptr<scalar_t>(), points.const_data_ptr<scalar_t>(),
        volume_grad ? gv.mutable_data_ptr<scalar_t>() : nullptr,
        points_grad ? gp.mutable_data_ptr<scalar_t>() : nullptr, n, ch, volume.size(2), volume.size(3),
        volume.size(4), np);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gv, gp};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> volume_sample_3d_double_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& volume_in, const at::Tensor& points_in,
    const c10::optional<at::Tensor>& gg_volume_in, const c10::optional<at::Tensor>& gg_points_in, bool out_grad,
    bool volume_grad, bool points_grad) {
  const char* op_name = "suite_ops::volume_sample_3d_double_backward";
  volume_sample_check(volume_in, points_in, op_name);
  const c10::cuda::CUDAGuard guard(volume_in.device());
  const at::Tensor volume = volume_in.contiguous(), points = points_in.contiguous(), go = grad_in.contiguous();
  const int64_t n = volume.size(0), ch = volume.size(1), np = points.size(1);
  volume_sample_check_like(go, {n, ch, np}, volume, op_name, "grad_out");
  at::Tensor uu, dirs;
  if (gg_volume_in.has_value()) {
    volume_sample_check_like(*gg_volume_in, volume.sizes(), volume, op_name, "gg_volume");
    uu = gg_volume_in->contiguous();
  }
  if (gg_points_in.has_value()) {
    volume_sample_check_like(*gg_points_in, points.sizes(), volume, op_name, "gg_points");
    dirs = gg_points_in->contiguous();
  }
  at::Tensor d_go = out_grad ? at::zeros_like(go) : at::empty({0}, go.options());
  at::Tensor d_v = volume_grad ? at::zeros_like(volume) : at::empty({0}, volume.options());
  at::Tensor d_p = points_grad ? at::zeros_like(points) : at::empty({0}, points.options());
  if (go.numel() == 0 || !(uu.defined() || dirs.defined())) return {d_go, d_v, d_p};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, volume.scalar_type(), "suite_ops::volume_sample_bwd2", [&] {
    volume_sample_bwd2_kernel<scalar_t><<<num_blocks(n * np, 256), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
        go.const_data_ptr<scalar_t>(), volume.const_data_ptr<scalar_t>(), points.const_data_ptr<scalar_t>(),
        uu.defined() ? uu.const_data_ptr<scalar_t>() : nullptr,
        dirs.defined() ? dirs.const_data_ptr<scalar_t>() : nullptr,
        out_grad ? d_go.mutable_data_ptr<scalar_t>() : nullptr,
        volume_grad ? d_v.mutable_data_ptr<scalar_t>() : nullptr,
        points_grad ? d_p.mutable_data_ptr<scalar_t>() : nullptr, n, ch, volume.size(2), volume.size(3),
        volume.size(4), np);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {d_go, d_v, d_p};
}

}  // namespace

TORCH_LIBRARY_IMPL(suite_ops, CUDA, m) {
  m.impl("volume_sample_3d", &volume_sample_3d_cuda);
  m.impl("volume_sample_3d_backward", &volume_sample_3d_backward_cuda);
  m.impl("volume_sample_3d_double_backward", &volume_sample_3d_double_backward_cuda);
}

}  // namespace suite_ops
