// Shared pieces of the suite_ops::volume_sample_3d kernels (CPU and CUDA): argument checks and the per-point
// trilinear stencil with its first and second derivatives.
//
// Semantics (genforce/volumegan models/rendering/utils.py grid_sample_3d): a volume [N, C, D, H, W] is read at
// points [N, P, 3] given in [-1, 1]^3 (x -> W, y -> H, z -> D) with the align_corners=True convention
// i = (g + 1) / 2 * (size - 1). The weights come from the fractional part of the unclamped index, the 8 corner
// indices are clamped into the volume, so values equal grid_sample's border padding everywhere and the
// derivative with respect to a coordinate is zero once the point is a voxel outside the volume.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

namespace suite_ops {

template <typename T>
C10_HOST_DEVICE inline T floor_value(T x) {
#ifdef __CUDA_ARCH__
  return floor(x);
#else
  return std::floor(x);
#endif
}

inline void volume_sample_check(const at::Tensor& volume, const at::Tensor& points, const char* op) {
  TORCH_CHECK(volume.dim() == 5, op, ": volume must be [N, C, D, H, W], got ", volume.sizes());
  TORCH_CHECK(points.dim() == 3 && points.size(2) == 3 && points.size(0) == volume.size(0), op,
              ": points must be [N, P, 3] with the volume's N, got ", points.sizes());
  TORCH_CHECK(points.scalar_type() == volume.scalar_type() && points.device() == volume.device(), op,
              ": points must have the volume's dtype and device");
  TORCH_CHECK(volume.is_floating_point(), op, ": volume must be floating point");
  TORCH_CHECK(volume.size(2) >= 1 && volume.size(3) >= 1 && volume.size(4) >= 1, op, ": empty volume ",
              volume.sizes());
}

inline void volume_sample_check_like(const at::Tensor& t, at::IntArrayRef sizes, const at::Tensor& like,
                                     const char* op, const char* name) {
  TORCH_CHECK(t.sizes() == sizes && t.scalar_type() == like.scalar_type() && t.device() == like.device(), op, ": ",
              name, " must be ", sizes, " with the volume's dtype and device, got ", t.sizes(), " ", t.scalar_type());
}

// Corner k of the stencil is (x, y, z) = (k & 1, (k >> 1) & 1, k >> 2).
template <typename T>
struct Trilinear {
  int64_t idx[8];  // flat offsets inside one [D, H, W] plane (clamped)
  T f[3];          // fractional parts of the unclamped index along x, y, z
  T s[3];          // d(index) / d(coordinate) = (size - 1) / 2 along x, y, z
};

template <typename T>
C10_HOST_DEVICE inline int64_t clamp_corner(T fl, int64_t size) {
  // NaN and far-away points land on a valid corner too (their weights carry the NaN / the border value).
  const T c = fl >= T(0) ? (fl <= T(size - 1) ? fl : T(size - 1)) : T(0);
  return static_cast<int64_t>(c);
}

template <typename T, typename scalar_t>
C10_HOST_DEVICE inline Trilinear<T> trilinear(const scalar_t* p, int64_t d, int64_t h, int64_t w) {
  const int64_t sizes[3] = {w, h, d};
  int64_t lo[3], hi[3];
  Trilinear<T> t;
#pragma unroll
  for (int a = 0; a < 3; ++a) {
    t.s[a] = T(sizes[a] - 1) / T(2);
    const T i = (T(p[a]) + T(1)) * t.s[a];
    const T fl = floor_value(i);
    t.f[a] = i - fl;
    lo[a] = clamp_corner<T>(fl, sizes[a]);
    hi[a] = clamp_corner<T>(fl + T(1), sizes[a]);
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int64_t x = (k & 1) ? hi[0] : lo[0], y = (k & 2) ? hi[1] : lo[1], z = (k & 4) ? hi[2] : lo[2];
    t.idx[k] = (z * h + y) * w + x;
  }
  return t;
}

// Weights w_k = prod_a (f_a or 1 - f_a).
template <typename T>
C10_HOST_DEVICE inline void trilinear_weights(const Trilinear<T>& t, T wk[8]) {
  const T wx[2] = {T(1) - t.f[0], t.f[0]}, wy[2] = {T(1) - t.f[1], t.f[1]}, wz[2] = {T(1) - t.f[2], t.f[2]};
#pragma unroll
  for (int k = 0; k < 8; ++k) wk[k] = wx[k & 1] * wy[(k >> 1) & 1] * wz[k >> 2];
}

// Directional weights sum_a u_a dw_k/dcoord_a (the derivative of the stencil along u).
template <typename T>
C10_HOST_DEVICE inline void trilinear_dir_weights(const Trilinear<T>& t, const T u[3], T wk[8]) {
  const T wx[2] = {T(1) - t.f[0], t.f[0]}, wy[2] = {T(1) - t.f[1], t.f[1]}, wz[2] = {T(1) - t.f[2], t.f[2]};
  const T ux = u[0] * t.s[0], uy = u[1] * t.s[1], uz = u[2] * t.s[2];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const T sx = (k & 1) ? T(1) : T(-1), sy = (k & 2) ? T(1) : T(-1), sz = (k & 4) ? T(1) : T(-1);
    const T a = wx[k & 1], b = wy[(k >> 1) & 1], c = wz[k >> 2];
    wk[k] = ux * sx * b * c + uy * sy * a * c + uz * sz * a * b;
  }
}

// Gradient of sum_k w_k v_k with respect to the three coordinates.
template <typename T>
C10_HOST_DEVICE inline void trilinear_grad(const Trilinear<T>& t, const T v[8], T g[3]) {
  const T fx = t.f[0], fy = t.f[1], fz = t.f[2];
  const T dx00 = v[1] - v[0], dx10 = v[3] - v[2], dx01 = v[5] - v[4], dx11 = v[7] - v[6];
  const T dy00 = v[2] - v[0], dy10 = v[3] - v[1], dy01 = v[6] - v[4], dy11 = v[7] - v[5];
  const T dz00 = v[4] - v[0], dz10 = v[5] - v[1], dz01 = v[6] - v[2], dz11 = v[7] - v[3];
  g[0] = t.s[0] * ((T(1) - fz) * ((T(1) - fy) * dx00 + fy * dx10) + fz * ((T(1) - fy) * dx01 + fy * dx11));
  g[1] = t.s[1] * ((T(1) - fz) * ((T(1) - fx) * dy00 + fx * dy10) + fz * ((T(1) - fx) * dy01 + fx * dy11));
  g[2] = t.s[2] * ((T(1) - fy) * ((T(1) - fx) * dz00 + fx * dz10) + fy * ((T(1) - fx) * dz01 + fx * dz11));
}

// Mixed second derivatives (xy, xz, yz) of sum_k w_k v_k; the pure ones are zero.
template <typename T>
C10_HOST_DEVICE inline void trilinear_hess(const Trilinear<T>& t, const T v[8], T hxy_xz_yz[3]) {
  const T fx = t.f[0], fy = t.f[1], fz = t.f[2];
  const T cxy0 = v[3] - v[2] - v[1] + v[0], cxy1 = v[7] - v[6] - v[5] + v[4];
  const T cxz0 = v[5] - v[4] - v[1] + v[0], cxz1 = v[7] - v[6] - v[3] + v[2];
  const T cyz0 = v[6] - v[4] - v[2] + v[0], cyz1 = v[7] - v[5] - v[3] + v[1];
  hxy_xz_yz[0] = t.s[0] * t.s[1] * ((T(1) - fz) * cxy0 + fz * cxy1);
  hxy_xz_yz[1] = t.s[0] * t.s[2] * ((T(1) - fy) * cxz0 + fy * cxz1);
  hxy_xz_yz[2] = t.s[1] * t.s[2] * ((T(1) - fx) * cyz0 + fx * cyz1);
}

}  // namespace suite_ops
