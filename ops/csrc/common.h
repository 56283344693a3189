// Shared argument checks and shape helpers of the suite_ops kernels (NVlabs torch_utils/ops: upfirdn2d, bias_act,
// grid_sample_gradfix).
#pragma once

#include <ATen/ATen.h>

#include "bias_act_math.h"

namespace suite_ops {

struct UpfirdnShape {
  int64_t out_h, out_w;
};

inline UpfirdnShape upfirdn2d_check(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy,
                                    int64_t downx, int64_t downy, int64_t padx0, int64_t padx1, int64_t pady0,
                                    int64_t pady1) {
  TORCH_CHECK(x.dim() == 4, "suite_ops::upfirdn2d: x must be [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(f.dim() == 2 && f.scalar_type() == at::kFloat,
              "suite_ops::upfirdn2d: f must be a 2-D float32 filter, got ", f.sizes(), " ", f.scalar_type());
  TORCH_CHECK(f.device() == x.device(), "suite_ops::upfirdn2d: f and x must be on the same device");
  TORCH_CHECK(f.size(0) >= 1 && f.size(1) >= 1, "suite_ops::upfirdn2d: empty filter");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "suite_ops::upfirdn2d: factors must be >= 1");
  const int64_t out_w = (x.size(3) * upx + padx0 + padx1 - f.size(1) + downx) / downx;
  const int64_t out_h = (x.size(2) * upy + pady0 + pady1 - f.size(0) + downy) / downy;
  TORCH_CHECK(out_w >= 1 && out_h >= 1, "suite_ops::upfirdn2d: output would be empty (", out_h, "x", out_w, ")");
  return {out_h, out_w};
}

inline void bias_act_check(const at::Tensor& x, const c10::optional<at::Tensor>& b,
                           const c10::optional<at::Tensor>& xref, const c10::optional<at::Tensor>& yref,
                           const c10::optional<at::Tensor>& dy, int64_t grad, int64_t dim, int64_t act) {
  TORCH_CHECK(x.is_floating_point(), "suite_ops::bias_act: x must be floating point");
  TORCH_CHECK(grad >= 0 && grad <= 2, "suite_ops::bias_act: grad mode must be 0, 1 or 2, got ", grad);
  TORCH_CHECK(act >= 1 && act <= 9, "suite_ops::bias_act: act index must be in 1..9, got ", act);
  TORCH_CHECK(dim >= 0 && (x.dim() == 0 || dim < x.dim()), "suite_ops::bias_act: bad dim ", dim);
  if (b.has_value()) {
    TORCH_CHECK(b->dim() == 1 && x.dim() > 0 && b->size(0) == x.size(dim) && b->scalar_type() == x.scalar_type() &&
                    b->device() == x.device(),
                "suite_ops::bias_act: b must be 1-D of length x.shape[dim] with x's dtype and device");
  }
  for (const auto* t : {&xref, &yref, &dy}) {
    if (t->has_value()) {
      TORCH_CHECK((*t)->sizes() == x.sizes() && (*t)->scalar_type() == x.scalar_type() &&
                      (*t)->device() == x.device(),
                  "suite_ops::bias_act: xref/yref/dy must match x in shape, dtype and device");
    }
  }
}

// x viewed as [outer, C, inner] around dim (C = x.shape[dim]): the bias index of flat element i is (i / inner) % C.
struct BiasActLayout {
  int64_t inner, channels;
};

inline BiasActLayout bias_act_layout(const at::Tensor& x, int64_t dim) {
  int64_t inner = 1;
  for (int64_t i = dim + 1; i < x.dim(); ++i) inner *= x.size(i);
  return {inner, x.dim() > 0 ? x.size(dim) : 1};
}

inline void bias_act_masked_check(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim, int64_t act) {
  TORCH_CHECK(act >= 1 && act <= 3, "suite_ops::bias_act_masked: act must be linear (1), relu (2) or lrelu (3), got ",
              act);
  bias_act_check(x, b, c10::nullopt, c10::nullopt, c10::nullopt, 0, dim, act);
}

// Checked, contiguous inputs and the allocated outputs of bias_act_masked (CPU and CUDA alike).
struct BiasActMaskedArgs {
  at::Tensor x, b, y, mask;
  BiasActLayout layout;
};

inline BiasActMaskedArgs bias_act_masked_prepare(const at::Tensor& x_in, const c10::optional<at::Tensor>& b,
                                                 int64_t dim, int64_t act) {
  bias_act_masked_check(x_in, b, dim, act);
  const at::Tensor x = x_in.contiguous();
  return {x, b.has_value() ? b->contiguous() : at::Tensor(), at::empty_like(x, at::MemoryFormat::Contiguous),
          at::empty({mask_words(x.numel())}, x.options().dtype(at::kInt)), bias_act_layout(x, dim)};
}

inline void bias_act_masked_grad_check(const at::Tensor& dy, const at::Tensor& mask, int64_t act) {
  TORCH_CHECK(dy.is_floating_point(), "suite_ops::bias_act_masked_grad: dy must be floating point");
  TORCH_CHECK(act >= 1 && act <= 3, "suite_ops::bias_act_masked_grad: act must be 1, 2 or 3, got ", act);
  TORCH_CHECK(mask.dim() == 1 && mask.scalar_type() == at::kInt && mask.device() == dy.device() &&
                  mask.is_contiguous() && mask.numel() == 2 * ((dy.numel() + 31) / 32),
              "suite_ops::bias_act_masked_grad: mask must be the contiguous int32 [2 * ceil(numel / 32)] tensor of "
              "bias_act_masked on dy's device, got ", mask.sizes(), " ", mask.scalar_type());
}

inline void grid_sample_check(const at::Tensor& input, const at::Tensor& grid) {
  TORCH_CHECK(input.dim() == 4, "suite_ops::grid_sample_2d: input must be [N, C, H, W], got ", input.sizes());
  TORCH_CHECK(grid.dim() == 4 && grid.size(3) == 2 && grid.size(0) == input.size(0),
              "suite_ops::grid_sample_2d: grid must be [N, Ho, Wo, 2] with input's N, got ", grid.sizes());
  TORCH_CHECK(grid.scalar_type() == input.scalar_type() && grid.device() == input.device(),
              "suite_ops::grid_sample_2d: grid must have input's dtype and device");
  TORCH_CHECK(input.is_floating_point(), "suite_ops::grid_sample_2d: input must be floating point");
}

// Unnormalised source coordinate, align_corners=False: ((g + 1) * size - 1) / 2.
template <typename T>
C10_HOST_DEVICE inline T grid_unnormalize(T g, int64_t size) {
  return ((g + T(1)) * T(size) - T(1)) / T(2);
}

}  // namespace suite_ops
