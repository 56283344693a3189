// CPU tile transforms of the Winograd F(4x4, 3x3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional
// Neural Networks", CVPR 2016, section 4): ops/winograd.py multiplies the transformed tiles with the transformed
// weights (one batched matrix product per tile position) and these kernels move between images and tiles.
//
// Tiles live in the layout [36, C, P], P = N * tiles_h * tiles_w (tile p = (n * tiles_h + th) * tiles_w + tw), so that
// one plane (n, c) and tile row th write or read contiguous runs of tiles_w values per tile position.
// - winograd_tiles(kind 0): input transform, V = B^T d B of the 6x6 patches at stride 4 (zero padding 1).
// - winograd_tiles(kind 1): adjoint of the output transform, A dY A^T of the 4x4 output tiles.
// - winograd_untiles(kind 0): adjoint of the input transform, B V B^T accumulated over the overlapping 6x6 patches.
// - winograd_untiles(kind 1): output transform, Y = A^T M A written to the 4x4 output tiles (cropped to H x W).
// Each kind of winograd_tiles is the adjoint of the same kind of winograd_untiles: the autograd formulas of
// ops/_compiled.py pair them, so derivatives of any order exist.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace suite_ops {
namespace {

constexpr int kTile = 6;  // alpha = m + r - 1 for m = 4 outputs and r = 3 taps
constexpr int kStep = 4;  // output tile size m

// The four 1-D transforms of F(4x4, 3x3), each applied to n values at once (one per tile in a row of tiles): in[k]
// and out[k] point to n contiguous values. B^T and A^T are the paper's matrices; B and A are their transposes
// (the adjoints). Written out so that the compiler vectorises over the tiles.
template <typename T>
inline void apply_bt(const T* const* in, T* const* out, int64_t n) {  // B^T: 6 -> 6 (input transform)
  for (int64_t t = 0; t < n; ++t) {
    const T d0 = in[0][t], d1 = in[1][t], d2 = in[2][t], d3 = in[3][t], d4 = in[4][t], d5 = in[5][t];
    out[0][t] = T(4) * d0 - T(5) * d2 + d4;
    out[1][t] = (d3 + d4) - T(4) * (d1 + d2);
    out[2][t] = (d4 - d3) + T(4) * (d1 - d2);
    out[3][t] = (d4 - d2) + T(2) * (d3 - d1);
    out[4][t] = (d4 - d2) - T(2) * (d3 - d1);
    out[5][t] = T(4) * d1 - T(5) * d3 + d5;
  }
}

template <typename T>
inline void apply_b(const T* const* in, T* const* out, int64_t n) {  // B: 6 -> 6 (adjoint of the input transform)
  for (int64_t t = 0; t < n; ++t) {
    const T m0 = in[0][t], m1 = in[1][t], m2 = in[2][t], m3 = in[3][t], m4 = in[4][t], m5 = in[5][t];
    out[0][t] = T(4) * m0;
    out[1][t] = T(4) * (m2 - m1) + T(2) * (m4 - m3) + T(4) * m5;
    out[2][t] = -T(5) * m0 - T(4) * (m1 + m2) - (m3 + m4);
    out[3][t] = (m1 - m2) + T(2) * (m3 - m4) - T(5) * m5;
    out[4][t] = m0 + m1 + m2 + m3 + m4;
    out[5][t] = m5;
  }
}

template <typename T>
inline void apply_at(const T* const* in, T* const* out, int64_t n) {  // A^T: 6 -> 4 (output transform)
  for (int64_t t = 0; t < n; ++t) {
    const T m0 = in[0][t], m1 = in[1][t], m2 = in[2][t], m3 = in[3][t], m4 = in[4][t], m5 = in[5][t];
    const T s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
    out[0][t] = m0 + s12 + s34;
    out[1][t] = d12 + T(2) * d34;
    out[2][t] = s12 + T(4) * s34;
    out[3][t] = d12 + T(8) * d34 + m5;
  }
}

template <typename T>
inline void apply_a(const T* const* in, T* const* out, int64_t n) {  // A: 4 -> 6 (adjoint of the output transform)
  for (int64_t t = 0; t < n; ++t) {
    const T y0 = in[0][t], y1 = in[1][t], y2 = in[2][t], y3 = in[3][t];
    out[0][t] = y0;
    out[1][t] = y0 + y1 + y2 + y3;
    out[2][t] = y0 - y1 + y2 - y3;
    out[3][t] = y0 + T(2) * y1 + T(4) * y2 + T(8) * y3;
    out[4][t] = y0 - T(2) * y1 + T(4) * y2 - T(8) * y3;
    out[5][t] = y3;
  }
}

// Gather (winograd_tiles): kind 0 reads 6x6 patches at offset -1 and applies B^T on both sides; kind 1 reads 4x4
// tiles at offset 0 and applies A on both sides. Per plane and tile row: the patch rows are copied zero-padded,
// split into one array per patch column (the de-interleave), transformed along the row, then along the column
// straight into the output.
template <int KIND, typename T>
void gather_planes(const T* __restrict x, T* __restrict out, int64_t N, int64_t C, int64_t H, int64_t W,
                   int64_t th_count, int64_t tw_count) {
  constexpr int R = KIND == 0 ? 6 : 4;
  constexpr int kOffset = KIND == 0 ? -1 : 0;
  const auto transform = KIND == 0 ? apply_bt<T> : apply_a<T>;
  const int64_t P = N * th_count * tw_count;
  const int64_t pos_stride = C * P;
  const int64_t row_len = kStep * tw_count + kTile;
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> row(row_len);
    std::vector<T> cols(R * tw_count);
    std::vector<T> horiz(R * kTile * tw_count);  // horiz[a][j][tw]
    const T* in[kTile];
    T* outp[kTile];
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / C, c = plane % C;
      const T* src = x + plane * H * W;
      for (int64_t th = 0; th < th_count; ++th) {
        for (int a = 0; a < R; ++a) {
          const int64_t y = th * kStep + kOffset + a;
          std::fill(row.begin(), row.end(), T(0));
          if (y >= 0 && y < H) {
            for (int64_t i = std::max<int64_t>(0, -kOffset); i < row_len && kOffset + i < W; ++i)
              row[i] = src[y * W + kOffset + i];
          }
          for (int b = 0; b < R; ++b) {
            T* col = cols.data() + b * tw_count;
            for (int64_t tw = 0; tw < tw_count; ++tw) col[tw] = row[tw * kStep + b];
            in[b] = col;
          }
          for (int j = 0; j < kTile; ++j) outp[j] = horiz.data() + (a * kTile + j) * tw_count;
          transform(in, outp, tw_count);
        }
        const int64_t p0 = (n * th_count + th) * tw_count;
        for (int j = 0; j < kTile; ++j) {
          for (int a = 0; a < R; ++a) in[a] = horiz.data() + (a * kTile + j) * tw_count;
          for (int i = 0; i < kTile; ++i) outp[i] = out + (i * kTile + j) * pos_stride + c * P + p0;
          transform(in, outp, tw_count);
        }
      }
    }
  });
}

// Scatter (winograd_untiles): kind 0 applies B on both sides and adds the 6x6 patches at offset -1 (they overlap);
// kind 1 applies A^T on both sides and writes the 4x4 tiles at offset 0. Per plane: a zero buffer covering every
// patch, filled tile row by tile row, then cropped to H x W.
template <int KIND, typename T>
void scatter_planes(const T* __restrict m, T* __restrict y, int64_t N, int64_t C, int64_t H, int64_t W,
                    int64_t th_count, int64_t tw_count) {
  constexpr int R = KIND == 0 ? 6 : 4;
  constexpr int kOffset = KIND == 0 ? -1 : 0;
  const auto transform = KIND == 0 ? apply_b<T> : apply_at<T>;
  const int64_t P = N * th_count * tw_count;
  const int64_t pos_stride = C * P;
  const int64_t buf_h = kStep * th_count + kTile, buf_w = kStep * tw_count + kTile;  // buffer (0, 0) = offset
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(buf_h * buf_w);
    std::vector<T> vert(R * kTile * tw_count);  // vert[a][j][tw]
    std::vector<T> cols(R * tw_count);
    const T* in[kTile];
    T* outp[kTile];
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / C, c = plane % C;
      std::fill(buf.begin(), buf.end(), T(0));
      for (int64_t th = 0; th < th_count; ++th) {
        const int64_t p0 = (n * th_count + th) * tw_count;
        for (int j = 0; j < kTile; ++j) {
          for (int i = 0; i < kTile; ++i) in[i] = m + (i * kTile + j) * pos_stride + c * P + p0;
          for (int a = 0; a < R; ++a) outp[a] = vert.data() + (a * kTile + j) * tw_count;
          transform(in, outp, tw_count);
        }
        for (int a = 0; a < R; ++a) {
          for (int j = 0; j < kTile; ++j) in[j] = vert.data() + (a * kTile + j) * tw_count;
          for (int b = 0; b < R; ++b) outp[b] = cols.data() + b * tw_count;
          transform(in, outp, tw_count);
          T* row = buf.data() + (th * kStep + a) * buf_w;
          for (int b = 0; b < R; ++b) {
            const T* col = cols.data() + b * tw_count;
            for (int64_t tw = 0; tw < tw_count; ++tw) row[tw * kStep + b] += col[tw];
          }
        }
      }
      T* dst = y + plane * H * W;
      for (int64_t yy = 0; yy < H; ++yy) {
        const T* row = buf.data() + (yy - kOffset) * buf_w - kOffset;
        std::copy(row, row + W, dst + yy * W);
      }
    }
  });
}

void check_kind(int64_t kind, const char* op) {
  TORCH_CHECK(kind == 0 || kind == 1, "suite_ops::", op, ": kind must be 0 (input) or 1 (output), got ", kind);
}

at::Tensor winograd_tiles_cpu(const at::Tensor& x, int64_t kind, int64_t tiles_h, int64_t tiles_w) {
  check_kind(kind, "winograd_tiles");
  TORCH_CHECK(x.dim() == 4, "suite_ops::winograd_tiles: x must be [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(x.is_floating_point(), "suite_ops::winograd_tiles: x must be floating point");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(tiles_h == (H + kStep - 1) / kStep && tiles_w == (W + kStep - 1) / kStep,
              "suite_ops::winograd_tiles: tiles must cover [H, W] = [", H, ", ", W, "] with 4x4 outputs, got ",
              tiles_h, "x", tiles_w);
  const at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty({kTile * kTile, C, N * tiles_h * tiles_w}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "winograd_tiles", [&] {
    if (kind == 0)
      gather_planes<0, scalar_t>(xc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N, C, H, W, tiles_h, tiles_w);
    else
      gather_planes<1, scalar_t>(xc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N, C, H, W, tiles_h, tiles_w);
  });
  return out;
}

at::Tensor winograd_untiles_cpu(const at::Tensor& m, int64_t kind, int64_t N, int64_t H, int64_t W) {
  check_kind(kind, "winograd_untiles");
  TORCH_CHECK(m.dim() == 3 && m.size(0) == kTile * kTile,
              "suite_ops::winograd_untiles: tiles must be [36, C, P], got ", m.sizes());
  TORCH_CHECK(m.is_floating_point(), "suite_ops::winograd_untiles: tiles must be floating point");
  const int64_t tiles_h = (H + kStep - 1) / kStep, tiles_w = (W + kStep - 1) / kStep, C = m.size(1);
  TORCH_CHECK(N >= 1 && H >= 1 && W >= 1 && m.size(2) == N * tiles_h * tiles_w,
              "suite_ops::winograd_untiles: P = ", m.size(2),
              " tiles do not match N * ceil(H/4) * ceil(W/4) for [N, H, W] = [", N, ", ", H, ", ", W, "]");
  const at::Tensor mc = m.contiguous();
  at::Tensor y = at::empty({N, C, H, W}, m.options());
  AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "winograd_untiles", [&] {
    if (kind == 0)
      scatter_planes<0, scalar_t>(mc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), N, C, H, W, tiles_h, tiles_w);
    else
      scatter_planes<1, scalar_t>(mc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), N, C, H, W, tiles_h, tiles_w);
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(suite_ops, CPU, m) {
  m.impl("winograd_tiles", &winograd_tiles_cpu);
  m.impl("winograd_untiles", &winograd_untiles_cpu);
}

}  // namespace suite_ops
