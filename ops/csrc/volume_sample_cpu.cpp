// CPU kernels of suite_ops::volume_sample_3d, its backward and its double backward (semantics in
// volume_sample.h). The stencil of every point is computed once; the work is then tiled in blocks of points so
// a block's stencils stay in cache while all channels are read ("point pass", one task per sample and block),
// and volume-shaped gradients are scattered plane by plane, each plane owned by one task ("plane pass", no
// races). Accumulation in opmath (float for half/bfloat16).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "volume_sample.h"

namespace suite_ops {
namespace {

constexpr int64_t kBlock = 512;  // points per tile

template <typename T>
struct PointStencil {
  Trilinear<T> t;
  T wk[8];  // trilinear weights
  T dk[8];  // weights differentiated along the incoming point gradient (double backward only)
};

struct Shape {
  int64_t n, ch, d, h, w, np, nv;
};

Shape shape_of(const at::Tensor& volume, const at::Tensor& points) {
  return {volume.size(0), volume.size(1), volume.size(2), volume.size(3),
          volume.size(4), points.size(1), volume.size(2) * volume.size(3) * volume.size(4)};
}

template <typename T, typename scalar_t>
std::vector<PointStencil<T>> stencils(const Shape& sh, const scalar_t* pts, const scalar_t* dirs) {
  std::vector<PointStencil<T>> table(sh.n * sh.np);
  at::parallel_for(0, sh.n * sh.np, 2048, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      PointStencil<T>& s = table[i];
      s.t = trilinear<T>(pts + 3 * i, sh.d, sh.h, sh.w);
      trilinear_weights(s.t, s.wk);
      if (dirs != nullptr) {
        const T u[3] = {T(dirs[3 * i]), T(dirs[3 * i + 1]), T(dirs[3 * i + 2])};
        trilinear_dir_weights(s.t, u, s.dk);
      }
    }
  });
  return table;
}

// fn(sample, p0, p1) for every tile of kBlock points of every sample.
template <typename Fn>
void point_pass(const Shape& sh, const Fn& fn) {
  const int64_t blocks = (sh.np + kBlock - 1) / kBlock;
  at::parallel_for(0, sh.n * blocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t task = b; task < e; ++task) {
      const int64_t s = task / blocks, p0 = (task % blocks) * kBlock;
      fn(s, p0, std::min(sh.np, p0 + kBlock));
    }
  });
}

// Scatter sum_p value(s, c, p) * weight_k(p) into out[s, c, idx_k(p)] (out zero-initialised), each plane (s, c)
// written by one task; weight_k comes from stencil field `field` (wk or dk).
template <typename T, typename scalar_t>
void plane_scatter(const Shape& sh, const std::vector<PointStencil<T>>& table, const scalar_t* values,
                   T (PointStencil<T>::*field)[8], at::Tensor& out) {
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, sh.n * sh.ch, 1, [&](int64_t b, int64_t e) {
    constexpr bool direct = std::is_same_v<T, scalar_t>;
    std::vector<T> acc(direct ? 0 : (e - b) * sh.nv, T(0));
    for (int64_t first = b; first < e;) {
      const int64_t s = first / sh.ch, last = std::min(e, (s + 1) * sh.ch);  // planes [first, last) of sample s
      const PointStencil<T>* tb = table.data() + s * sh.np;
      for (int64_t p0 = 0; p0 < sh.np; p0 += kBlock) {
        const int64_t p1 = std::min(sh.np, p0 + kBlock);
        for (int64_t pl = first; pl < last; ++pl) {
          T* dst;
          if constexpr (direct) {
            dst = op + pl * sh.nv;
          } else {
            dst = acc.data() + (pl - b) * sh.nv;
          }
          const scalar_t* g = values + pl * sh.np;
          for (int64_t p = p0; p < p1; ++p) {
            const PointStencil<T>& st = tb[p];
            const T v = T(g[p]);
            const T* wt = st.*field;
            for (int k = 0; k < 8; ++k) dst[st.t.idx[k]] += wt[k] * v;
          }
        }
      }
      first = last;
    }
    if constexpr (!direct) {
      for (int64_t i = 0; i < (e - b) * sh.nv; ++i) op[b * sh.nv + i] = scalar_t(acc[i]);
    }
  });
}

template <typename T, typename scalar_t>
inline void corners(const scalar_t* plane, const Trilinear<T>& t, T v[8]) {
  for (int k = 0; k < 8; ++k) v[k] = T(plane[t.idx[k]]);
}

at::Tensor volume_sample_3d_cpu(const at::Tensor& volume_in, const at::Tensor& points_in) {
  volume_sample_check(volume_in, points_in, "suite_ops::volume_sample_3d");
  const at::Tensor volume = volume_in.contiguous(), points = points_in.contiguous();
  const Shape sh = shape_of(volume, points);
  at::Tensor out = at::empty({sh.n, sh.ch, sh.np}, volume.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, volume.scalar_type(), "suite_ops::volume_sample_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* vp = volume.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    const auto table = stencils<T>(sh, points.const_data_ptr<scalar_t>(), static_cast<const scalar_t*>(nullptr));
    point_pass(sh, [&](int64_t s, int64_t p0, int64_t p1) {
      const PointStencil<T>* tb = table.data() + s * sh.np;
      for (int64_t c = 0; c < sh.ch; ++c) {
        const scalar_t* src = vp + (s * sh.ch + c) * sh.nv;
        scalar_t* dst = op + (s * sh.ch + c) * sh.np;
        for (int64_t p = p0; p < p1; ++p) {
          const PointStencil<T>& st = tb[p];
          T acc = T(0);
          for (int k = 0; k < 8; ++k) acc += st.wk[k] * T(src[st.t.idx[k]]);
          dst[p] = scalar_t(acc);
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> volume_sample_3d_backward_cpu(const at::Tensor& grad_in,
                                                                 const at::Tensor& volume_in,
                                                                 const at::Tensor& points_in, bool volume_grad,
                                                                 bool points_grad) {
  const char* op_name = "suite_ops::volume_sample_3d_backward";
  volume_sample_check(volume_in, points_in, op_name);
  const at::Tensor volume = volume_in.contiguous(), points = points_in.contiguous(), go = grad_in.contiguous();
  const Shape sh = shape_of(volume, points);
  volume_sample_check_like(go, {sh.n, sh.ch, sh.np}, volume, op_name, "grad_out");
  at::Tensor gv = volume_grad ? at::zeros_like(volume) : at::empty({0}, volume.options());
  at::Tensor gp = points_grad ? at::zeros_like(points) : at::empty({0}, points.options());
  if (go.numel() == 0 || !(volume_grad || points_grad)) return {gv, gp};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, volume.scalar_type(), "suite_ops::volume_sample_bwd", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* gop = go.const_data_ptr<scalar_t>();
    const auto table = stencils<T>(sh, points.const_data_ptr<scalar_t>(), static_cast<const scalar_t*>(nullptr));
    if (volume_grad) plane_scatter<T, scalar_t>(sh, table, gop, &PointStencil<T>::wk, gv);
    if (points_grad) {
      const scalar_t* vp = volume.const_data_ptr<scalar_t>();
      scalar_t* gpp = gp.mutable_data_ptr<scalar_t>();
      point_pass(sh, [&](int64_t s, int64_t p0, int64_t p1) {
        const PointStencil<T>* tb = table.data() + s * sh.np;
        T acc[kBlock][3] = {};
        for (int64_t c = 0; c < sh.ch; ++c) {
          const scalar_t* src = vp + (s * sh.ch + c) * sh.nv;
          const scalar_t* g = gop + (s * sh.ch + c) * sh.np;
          for (int64_t p = p0; p < p1; ++p) {
            T v[8], gr[3];
            corners(src, tb[p].t, v);
            trilinear_grad(tb[p].t, v, gr);
            const T gv_ = T(g[p]);
            for (int a = 0; a < 3; ++a) acc[p - p0][a] += gv_ * gr[a];
          }
        }
        for (int64_t p = p0; p < p1; ++p)
          for (int a = 0; a < 3; ++a) gpp[(s * sh.np + p) * 3 + a] = scalar_t(acc[p - p0][a]);
      });
    }
  });
  return {gv, gp};
}

// Derivative of (grad_volume, grad_points) = backward(grad_out, volume, points) applied to the incoming
// (gg_volume, gg_points): returns d/d grad_out, d/d volume, d/d points (empty where not requested).
std::tuple<at::Tensor, at::Tensor, at::Tensor> volume_sample_3d_double_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& volume_in, const at::Tensor& points_in,
    const c10::optional<at::Tensor>& gg_volume_in, const c10::optional<at::Tensor>& gg_points_in, bool out_grad,
    bool volume_grad, bool points_grad) {
  const char* op_name = "suite_ops::volume_sample_3d_double_backward";
  volume_sample_check(volume_in, points_in, op_name);
  const at::Tensor volume = volume_in.contiguous(), points = points_in.contiguous(), go = grad_in.contiguous();
  const Shape sh = shape_of(volume, points);
  volume_sample_check_like(go, {sh.n, sh.ch, sh.np}, volume, op_name, "grad_out");
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
  const bool has_u = uu.defined(), has_dir = dirs.defined();
  if (go.numel() == 0 || !(has_u || has_dir)) return {d_go, d_v, d_p};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, volume.scalar_type(), "suite_ops::volume_sample_bwd2", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* gop = go.const_data_ptr<scalar_t>();
    const scalar_t* vp = volume.const_data_ptr<scalar_t>();
    const scalar_t* up = has_u ? uu.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* dp = has_dir ? dirs.const_data_ptr<scalar_t>() : nullptr;
    const auto table = stencils<T>(sh, points.const_data_ptr<scalar_t>(), dp);
    if (volume_grad && has_dir) plane_scatter<T, scalar_t>(sh, table, gop, &PointStencil<T>::dk, d_v);
    if (!(out_grad || points_grad)) return;
    scalar_t* dgo = out_grad ? d_go.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* dpp = points_grad ? d_p.mutable_data_ptr<scalar_t>() : nullptr;
    point_pass(sh, [&](int64_t s, int64_t p0, int64_t p1) {
      const PointStencil<T>* tb = table.data() + s * sh.np;
      T acc[kBlock][3] = {};
      for (int64_t c = 0; c < sh.ch; ++c) {
        const int64_t plane = s * sh.ch + c;
        const scalar_t* vsrc = vp + plane * sh.nv;
        const scalar_t* usrc = has_u ? up + plane * sh.nv : nullptr;
        const scalar_t* g = gop + plane * sh.np;
        for (int64_t p = p0; p < p1; ++p) {
          const PointStencil<T>& st = tb[p];
          T v[8], u[8];
          if (has_dir) corners(vsrc, st.t, v);
          if (has_u) corners(usrc, st.t, u);
          if (out_grad) {
            T val = T(0);
            for (int k = 0; k < 8; ++k) {
              if (has_u) val += st.wk[k] * u[k];
              if (has_dir) val += st.dk[k] * v[k];
            }
            dgo[plane * sh.np + p] = scalar_t(val);
          }
          if (points_grad) {
            const T gval = T(g[p]);
            if (has_u) {
              T gr[3];
              trilinear_grad(st.t, u, gr);
              for (int a = 0; a < 3; ++a) acc[p - p0][a] += gval * gr[a];
            }
            if (has_dir) {
              T hs[3];  // xy, xz, yz
              trilinear_hess(st.t, v, hs);
              const scalar_t* dir = dp + (s * sh.np + p) * 3;
              const T ux = T(dir[0]), uy = T(dir[1]), uz = T(dir[2]);
              acc[p - p0][0] += gval * (hs[0] * uy + hs[1] * uz);
              acc[p - p0][1] += gval * (hs[0] * ux + hs[2] * uz);
              acc[p - p0][2] += gval * (hs[1] * ux + hs[2] * uy);
            }
          }
        }
      }
      if (points_grad) {
        for (int64_t p = p0; p < p1; ++p)
          for (int a = 0; a < 3; ++a) dpp[(s * sh.np + p) * 3 + a] = scalar_t(acc[p - p0][a]);
      }
    });
  });
  return {d_go, d_v, d_p};
}

}  // namespace

TORCH_LIBRARY_IMPL(suite_ops, CPU, m) {
  m.impl("volume_sample_3d", &volume_sample_3d_cpu);
  m.impl("volume_sample_3d_backward", &volume_sample_3d_backward_cpu);
  m.impl("volume_sample_3d_double_backward", &volume_sample_3d_double_backward_cpu);
}

}  // namespace suite_ops
