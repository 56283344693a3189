// CPU kernel of suite_ops::upfirdn2d (NVlabs torch_utils/ops/upfirdn2d.py): polyphase, no zero insertion.
// For output column ox and filter tap kx, the padded-upsampled position ox*down + kx - pad0 hits an input pixel
// only when divisible by up; for a fixed tap these columns form an arithmetic progression (step up/gcd), so each
// (row tap, column tap) pair is one strided multiply-add over a row, accumulated in a row buffer.
// Separable filters (setup_filter's outer product, ops/upfirdn2d.py) take a fast path for fp32/fp64: per output row
// a vertical pass of the valid row taps into a zero-padded row buffer, then per output phase a horizontal pass, with
// the taps unrolled in registers (fh + fw instead of fh * fw multiply-adds per output).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <limits>
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

// Most taps per output phase of the separable path; longer filters use the general path.
constexpr int kMaxTaps = 8;

// Rank-1 split of the correlation weights g [fh, fw] = wy wx^T (setup_filter, ops/upfirdn2d.py). Both factors are
// divided by sqrt(|pivot|), so an outer product u u^T (e.g. [1,3,3,1]) splits into exact factors. False unless every
// weight is reproduced within the relative tolerance tol (a few units of rounding of the compute type).
bool split_separable(const std::vector<double>& g, int64_t fh, int64_t fw, double tol, std::vector<double>& wy,
                     std::vector<double>& wx) {
  int64_t pivot = 0;
  for (int64_t i = 1; i < fh * fw; ++i)
    if (std::abs(g[i]) > std::abs(g[pivot])) pivot = i;
  if (g[pivot] == 0.0) return false;
  const int64_t r = pivot / fw, c = pivot % fw;
  const double s = std::sqrt(std::abs(g[pivot])), sign = g[pivot] > 0.0 ? 1.0 : -1.0;
  wy.resize(fh);
  wx.resize(fw);
  for (int64_t ky = 0; ky < fh; ++ky) wy[ky] = g[ky * fw + c] / s;
  for (int64_t kx = 0; kx < fw; ++kx) wx[kx] = sign * g[r * fw + kx] / s;
  for (int64_t ky = 0; ky < fh; ++ky)
    for (int64_t kx = 0; kx < fw; ++kx)
      if (std::abs(wy[ky] * wx[kx] - g[ky * fw + kx]) > tol * std::abs(g[ky * fw + kx])) return false;
  return true;
}

// Vertical pass: dst[i] = sum_t w[t] * rows[t][i] over NT input rows.
template <int NT, typename T>
inline void vertical_pass(T* __restrict dst, const T* const* rows, const T* w, int64_t n) {
  std::array<const T*, NT> r;
  std::array<T, NT> wl;
  for (int t = 0; t < NT; ++t) r[t] = rows[t], wl[t] = w[t];
  for (int64_t i = 0; i < n; ++i) {
    T s = wl[0] * r[0][i];
    for (int t = 1; t < NT; ++t) s += wl[t] * r[t][i];
    dst[i] = s;
  }
}

// Horizontal pass of one output phase: dst[j] = sum_t w[t] * src[off[t] + j * step], step = SI or si if SI == 0.
template <int NT, int SI, typename T>
inline void horizontal_pass(T* __restrict dst, const T* src, const T* w, const int64_t* off, int64_t n,
                            int64_t si) {
  const int64_t step = SI > 0 ? SI : si;
  std::array<const T*, NT> p;
  std::array<T, NT> wl;
  for (int t = 0; t < NT; ++t) p[t] = src + off[t], wl[t] = w[t];
  for (int64_t j = 0; j < n; ++j) {
    T s = wl[0] * p[0][j * step];
    for (int t = 1; t < NT; ++t) s += wl[t] * p[t][j * step];
    dst[j] = s;
  }
}

// Calls f.template operator()<NT>() for a runtime tap count 1..kMaxTaps.
template <typename F>
inline void dispatch_taps(int64_t nt, const F& f) {
  switch (nt) {
    case 1: return f.template operator()<1>();
    case 2: return f.template operator()<2>();
    case 3: return f.template operator()<3>();
    case 4: return f.template operator()<4>();
    case 5: return f.template operator()<5>();
    case 6: return f.template operator()<6>();
    case 7: return f.template operator()<7>();
    case 8: return f.template operator()<8>();
    default: TORCH_CHECK(false, "suite_ops::upfirdn2d: bad tap count ", nt);
  }
}

// One output phase of a row: outputs phase + j * step_o (j < count) read the taps of `weights` at buffer offsets
// `offsets` + j * step_i.
template <typename T>
struct Phase {
  int64_t count;
  std::vector<T> weights;
  std::vector<int64_t> offsets;
};

// Separable path (fp32/fp64); see the file comment. wy/wx: the split correlation weights.
template <typename T>
void upfirdn2d_separable(const T* xp, T* yp, int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h,
                         int64_t out_w, int64_t upx, int64_t upy, int64_t downx, int64_t downy, int64_t padx0,
                         int64_t pady0, const std::vector<double>& wy, const std::vector<double>& wx) {
  const int64_t fh = static_cast<int64_t>(wy.size()), fw = static_cast<int64_t>(wx.size());
  const int64_t gx = std::gcd(upx, downx);
  const int64_t step_o = upx / gx, step_i = downx / gx;
  // Phases and the zero padding of the row buffer that keeps every tap of every phase inside it.
  std::vector<Phase<T>> phases;
  int64_t lo = 0, hi = in_w - 1;
  for (int64_t ph = 0; ph < std::min(step_o, out_w); ++ph) {
    Phase<T> p{(out_w - ph + step_o - 1) / step_o, {}, {}};
    for (int64_t kx = 0; kx < fw; ++kx) {
      const int64_t pos = ph * downx + kx - padx0;
      if (floor_mod(pos, upx) != 0) continue;
      const int64_t ix = (pos - floor_mod(pos, upx)) / upx;
      lo = std::min(lo, ix);
      hi = std::max(hi, ix + (p.count - 1) * step_i);
      p.weights.push_back(static_cast<T>(wx[kx]));
      p.offsets.push_back(ix);
    }
    phases.push_back(std::move(p));
  }
  const int64_t pad_l = -lo, buf_w = hi - lo + 1;
  for (auto& p : phases)
    for (auto& o : p.offsets) o += pad_l;

  const int64_t grain = std::max<int64_t>(1, 32768 / (out_w * (fh + fw) + in_w + 1));
  at::parallel_for(0, planes * out_h, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(buf_w, T(0));
    std::vector<T> scratch(step_o > 1 ? out_w + step_o : 0);
    std::array<const T*, kMaxTaps> rows;
    std::array<T, kMaxTaps> wv;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / out_h, oy = r % out_h;
      T* out = yp + r * out_w;
      int64_t nt = 0;
      for (int64_t ky = 0; ky < fh; ++ky) {
        const int64_t pos = oy * downy + ky - pady0;
        if (floor_mod(pos, upy) != 0) continue;
        const int64_t iy = (pos - floor_mod(pos, upy)) / upy;
        if (iy < 0 || iy >= in_h) continue;
        rows[nt] = xp + (plane * in_h + iy) * in_w;
        wv[nt++] = static_cast<T>(wy[ky]);
      }
      if (nt == 0) {
        std::fill(out, out + out_w, T(0));
        continue;
      }
      T* row = buf.data() + pad_l;
      dispatch_taps(nt, [&]<int NT>() { vertical_pass<NT>(row, rows.data(), wv.data(), in_w); });
      T* dst = step_o > 1 ? scratch.data() : out;  // phases one after the other, interleaved below
      for (const auto& p : phases) {
        const int64_t ntx = static_cast<int64_t>(p.weights.size());
        if (ntx == 0) {
          std::fill(dst, dst + p.count, T(0));
        } else {
          dispatch_taps(ntx, [&]<int NT>() {
            const T* w = p.weights.data();
            const int64_t* o = p.offsets.data();
            if (step_i == 1)
              horizontal_pass<NT, 1>(dst, buf.data(), w, o, p.count, 1);
            else if (step_i == 2)
              horizontal_pass<NT, 2>(dst, buf.data(), w, o, p.count, 2);
            else
              horizontal_pass<NT, 0>(dst, buf.data(), w, o, p.count, step_i);
          });
        }
        dst += p.count;
      }
      if (step_o == 2) {  // interleave the two phases (upsampling by 2)
        const T* s0 = scratch.data();
        const T* s1 = s0 + phases[0].count;
        for (int64_t j = 0; j < out_w / 2; ++j) out[2 * j] = s0[j], out[2 * j + 1] = s1[j];
        if (out_w % 2) out[out_w - 1] = s0[out_w / 2];
      } else if (step_o > 2) {
        int64_t base = 0;
        for (int64_t q = 0; q < static_cast<int64_t>(phases.size()); ++q) {
          for (int64_t j = 0; j < phases[q].count; ++j) out[q + j * step_o] = scratch[base + j];
          base += phases[q].count;
        }
      }
    }
  });
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

  std::vector<double> wy, wx;
  const bool short_taps = (fh + upy - 1) / upy <= kMaxTaps && (fw + upx - 1) / upx <= kMaxTaps;
  const bool fp64 = x.scalar_type() == at::kDouble;
  const double tol = 4 * (fp64 ? std::numeric_limits<double>::epsilon() : std::numeric_limits<float>::epsilon());
  if ((fp64 || x.scalar_type() == at::kFloat) && short_taps && split_separable(g, fh, fw, tol, wy, wx)) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "suite_ops::upfirdn2d_cpu", [&] {
      upfirdn2d_separable<scalar_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), planes, in_h,
                                    in_w, out_h, out_w, upx, upy, downx, downy, padx0, pady0, wy, wx);
    });
    return y;
  }

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
