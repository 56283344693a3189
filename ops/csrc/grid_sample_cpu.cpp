// CPU kernels of suite_ops::grid_sample_2d and its backward: bilinear, zeros padding, align_corners=False
// (NVlabs torch_utils/ops/grid_sample_gradfix.py). Per batch sample, the four corner offsets and weights of every
// output pixel are computed once and reused for all channels; the backward scatters into each input plane from one
// thread (no races).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "common.h"

namespace suite_ops {
namespace {

template <typename T>
struct Corners {
  int64_t idx[4];  // flat input offsets (0 when outside)
  T w[4];          // bilinear weights (0 when outside)
  T wx1, wy1;      // fractional parts, for the grid gradient
  bool valid[4];
};

template <typename T, typename scalar_t>
inline Corners<T> corners(const scalar_t* g, int64_t h, int64_t w) {
  const T ix = grid_unnormalize<T>(T(g[0]), w), iy = grid_unnormalize<T>(T(g[1]), h);
  const T fx = std::floor(ix), fy = std::floor(iy);
  const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  Corners<T> c;
  c.wx1 = ix - fx;
  c.wy1 = iy - fy;
  const T wx[2] = {T(1) - c.wx1, c.wx1}, wy[2] = {T(1) - c.wy1, c.wy1};
  for (int k = 0; k < 4; ++k) {
    const int64_t xx = x0 + (k & 1), yy = y0 + (k >> 1);
    c.valid[k] = xx >= 0 && xx < w && yy >= 0 && yy < h;
    c.idx[k] = c.valid[k] ? yy * w + xx : 0;
    c.w[k] = c.valid[k] ? wx[k & 1] * wy[k >> 1] : T(0);
  }
  return c;
}

at::Tensor grid_sample_2d_cpu(const at::Tensor& input_in, const at::Tensor& grid_in) {
  grid_sample_check(input_in, grid_in);
  const at::Tensor input = input_in.contiguous(), grid = grid_in.contiguous();
  const int64_t n = input.size(0), ch = input.size(1), h = input.size(2), w = input.size(3);
  const int64_t ho = grid.size(1), wo = grid.size(2), np = ho * wo;
  at::Tensor out = at::empty({n, ch, ho, wo}, input.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "suite_ops::grid_sample_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* ip = input.const_data_ptr<scalar_t>();
    const scalar_t* gp = grid.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    std::vector<Corners<T>> table(n * np);
    at::parallel_for(0, n * np, 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) table[i] = corners<T>(gp + 2 * i, h, w);
    });
    at::parallel_for(0, n * ch, std::max<int64_t>(1, 16384 / np), [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) {
        const scalar_t* src = ip + pl * h * w;
        const Corners<T>* tb = table.data() + (pl / ch) * np;
        scalar_t* dst = op + pl * np;
        for (int64_t p = 0; p < np; ++p) {
          const Corners<T>& c = tb[p];
          dst[p] = scalar_t(c.w[0] * T(src[c.idx[0]]) + c.w[1] * T(src[c.idx[1]]) + c.w[2] * T(src[c.idx[2]]) +
                            c.w[3] * T(src[c.idx[3]]));
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> grid_sample_2d_backward_cpu(const at::Tensor& grad_in, const at::Tensor& input_in,
                                                               const at::Tensor& grid_in, bool input_grad,
                                                               bool grid_grad) {
  grid_sample_check(input_in, grid_in);
  const at::Tensor input = input_in.contiguous(), grid = grid_in.contiguous(), go = grad_in.contiguous();
  const int64_t n = input.size(0), ch = input.size(1), h = input.size(2), w = input.size(3);
  const int64_t ho = grid.size(1), wo = grid.size(2), np = ho * wo;
  TORCH_CHECK(go.sizes() == at::IntArrayRef({n, ch, ho, wo}), "suite_ops::grid_sample_2d_backward: grad_out shape ",
              go.sizes(), " does not match the output shape");
  at::Tensor gi = input_grad ? at::zeros_like(input) : at::empty({0}, input.options());
  at::Tensor gg = grid_grad ? at::zeros_like(grid) : at::empty({0}, grid.options());
  if (go.numel() == 0) return {gi, gg};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "suite_ops::grid_sample_bwd", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* ip = input.const_data_ptr<scalar_t>();
    const scalar_t* gp = grid.const_data_ptr<scalar_t>();
    const scalar_t* gop = go.const_data_ptr<scalar_t>();
    std::vector<Corners<T>> table(n * np);
    at::parallel_for(0, n * np, 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) table[i] = corners<T>(gp + 2 * i, h, w);
    });
    if (input_grad) {
      scalar_t* gip = gi.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, n * ch, std::max<int64_t>(1, 16384 / np), [&](int64_t b, int64_t e) {
        std::vector<T> acc(h * w);
        for (int64_t pl = b; pl < e; ++pl) {
          std::fill(acc.begin(), acc.end(), T(0));
          const Corners<T>* tb = table.data() + (pl / ch) * np;
          const scalar_t* g = gop + pl * np;
          for (int64_t p = 0; p < np; ++p) {
            const T v = T(g[p]);
            for (int k = 0; k < 4; ++k) acc[tb[p].idx[k]] += tb[p].w[k] * v;
          }
          scalar_t* dst = gip + pl * h * w;
          for (int64_t i = 0; i < h * w; ++i) dst[i] = scalar_t(acc[i]);
        }
      });
    }
    if (grid_grad) {
      scalar_t* ggp = gg.mutable_data_ptr<scalar_t>();
      const T sx = T(w) / T(2), sy = T(h) / T(2);  // d(ix)/d(gx), d(iy)/d(gy)
      at::parallel_for(0, n * np, std::max<int64_t>(1, 1024 / (ch + 1)), [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const int64_t s = i / np, p = i % np;
          const Corners<T>& c = table[i];
          T dx = 0, dyy = 0;
          for (int64_t k = 0; k < ch; ++k) {
            const scalar_t* src = ip + (s * ch + k) * h * w;
            const T g = T(gop[(s * ch + k) * np + p]);
            const T v00 = c.valid[0] ? T(src[c.idx[0]]) : T(0), v01 = c.valid[1] ? T(src[c.idx[1]]) : T(0);
            const T v10 = c.valid[2] ? T(src[c.idx[2]]) : T(0), v11 = c.valid[3] ? T(src[c.idx[3]]) : T(0);
            dx += g * ((v01 - v00) * (T(1) - c.wy1) + (v11 - v10) * c.wy1);
            dyy += g * ((v10 - v00) * (T(1) - c.wx1) + (v11 - v01) * c.wx1);
          }
          ggp[2 * i] = scalar_t(dx * sx);
          ggp[2 * i + 1] = scalar_t(dyy * sy);
        }
      });
    }
  });
  return {gi, gg};
}

}  // namespace

TORCH_LIBRARY_IMPL(suite_ops, CPU, m) {
  m.impl("grid_sample_2d", &grid_sample_2d_cpu);
  m.impl("grid_sample_2d_backward", &grid_sample_2d_backward_cpu);
}

}  // namespace suite_ops
