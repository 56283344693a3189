// CPU kernel of suite_ops::upfirdn2d (specs/ops.md §2.2): polyphase, no zero insertion.
// For output column ox and filter tap kx, the padded-upsampled position ox*down + kx - pad0 hits an input pixel
// only when divisible by up; for a fixed tap these columns form an arithmetic progression (step up/gcd), so each
// (row tap, column tap) pair is one strided multiply-add over a row, accumulated in a row buffer.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <numeric>
#include <vector>

#include "common.h"

namespace suite_ops {
namespace {

struct ColumnTap {
  int64_t ox0, ix0, count;  // first output column, its input column, number of columns
};

inline int64_t floor_mod(int64_t a, int64_t m) { return ((a % m) + m) % m; }

// Strided multiply-add; compile-time strides for the common cases let the compiler vectorise.
template <int SO, int SI, typename acc_t, typename scalar_t>
inline void axpy_fixed(acc_t* __restrict acc, const scalar_t* __restrict row, acc_t w, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i * SO] += w * static_cast<acc_t>(row[i * SI]);
}

template <typename acc_t, typename scalar_t>
inline void axpy(acc_t* acc, const scalar_t* row, acc_t w, int64_t n, int64_t so, int64_t si) {
  if (so == 1 && si == 1) return axpy_fixed<1, 1>(acc, row, w, n);
  if (so == 1 && si == 2) return axpy_fixed<1, 2>(acc, row, w, n);
  if (so == 2 && si == 1) return axpy_fixed<2, 1>(acc, row, w, n);
  for (int64_t i = 0; i < n; ++i) acc[i * so] += w * static_cast<acc_t>(row[i * si]);
}

at::Tensor upfirdn2d_cpu(const at::Tensor& x_in, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                         int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip,
                         double gain) {
  const auto shape = upfirdn2d_check(x_in, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1);
  const at::Tensor x = x_in.contiguous();
  const int64_t planes = x.size(0) * x.size(1), in_h = x.size(2), in_w = x.size(3);
  const int64_t out_h = shape.out_h, out_w = shape.out_w;
  const int64_t fh = f.size(0), fw = f.size(1);
  at::Tensor y = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
  if (y.numel() == 0) return y;

  // Correlation weights: the filter is flipped unless flip (true convolution by default), times gain.
  const at::Tensor fc = f.contiguous();
  const float* fp = fc.data_ptr<float>();
  std::vector<double> g(fh * fw);
  for (int64_t ky = 0; ky < fh; ++ky)
    for (int64_t kx = 0; kx < fw; ++kx)
      g[ky * fw + kx] = gain * fp[(flip ? ky : fh - 1 - ky) * fw + (flip ? kx : fw - 1 - kx)];

  // Column taps (independent of the row).
  const int64_t gx = std::gcd(upx, downx);
  const int64_t step_o = upx / gx, step_i = downx / gx;
  std::vector<ColumnTap> taps(fw);
  for (int64_t kx = 0; kx < fw; ++kx) {
    ColumnTap t{0, 0, 0};
    for (int64_t ox = 0; ox < out_w; ++ox) {
      const int64_t p = ox * downx + kx - padx0;
      if (floor_mod(p, upx) != 0) continue;
      const int64_t ix = (p - floor_mod(p, upx)) / upx;
      if (ix < 0 || ix >= in_w) continue;
      if (t.count == 0) t.ox0 = ox, t.ix0 = ix;
      ++t.count;
    }
    taps[kx] = t;
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "suite_ops::upfirdn2d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> gw(g.begin(), g.end());
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 32768 / (out_w * fh * fw + 1));
    at::parallel_for(0, planes * out_h, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(out_w);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t plane = r / out_h, oy = r % out_h;
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t ky = 0; ky < fh; ++ky) {
          const int64_t p = oy * downy + ky - pady0;
          if (floor_mod(p, upy) != 0) continue;
          const int64_t iy = (p - floor_mod(p, upy)) / upy;
          if (iy < 0 || iy >= in_h) continue;
          const scalar_t* row = xp + (plane * in_h + iy) * in_w;
          for (int64_t kx = 0; kx < fw; ++kx) {
            const acc_t w = gw[ky * fw + kx];
            const ColumnTap& t = taps[kx];
            if (w == acc_t(0) || t.count == 0) continue;
            axpy(acc.data() + t.ox0, row + t.ix0, w, t.count, step_o, step_i);
          }
        }
        scalar_t* out = yp + r * out_w;
        for (int64_t ox = 0; ox < out_w; ++ox) out[ox] = static_cast<scalar_t>(acc[ox]);
      }
    });
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(suite_ops, CPU, m) { m.impl("upfirdn2d", &upfirdn2d_cpu); }

}  // namespace suite_ops
