// Operator schemas of the suite_ops library and the Python module ops._C (docs/ops.md).
// Importing ops._C runs the static registrations below; kernels live in *_cpu.cpp and *.cu.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// An empty module: `import ops._C` loads this shared library so TORCH_LIBRARY registers the operators.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace suite_ops {

bool has_cuda() {
#ifdef SUITE_OPS_WITH_CUDA
  return true;
#else
  return false;
#endif
}

TORCH_LIBRARY(suite_ops, m) {
  m.def(
      "upfirdn2d(Tensor x, Tensor f, int upx, int upy, int downx, int downy, int padx0, int padx1, int pady0, "
      "int pady1, bool flip, float gain) -> Tensor");
  // save_y only tells the autograd formula whether the backward masks by the saved output (docs/ops.md).
  m.def(
      "bias_act(Tensor x, Tensor? b, Tensor? xref, Tensor? yref, Tensor? dy, int grad, int dim, int act, "
      "float alpha, float gain, float clamp, bool save_y) -> Tensor");
  // Forward of linear (+clamp), relu and lrelu that also packs the 2-bit gradient mask (bias_act_math.h).
  m.def(
      "bias_act_masked(Tensor x, Tensor? b, int dim, int act, float alpha, float gain, float clamp) "
      "-> (Tensor, Tensor)");
  m.def("bias_act_masked_grad(Tensor dy, Tensor mask, int act, float alpha, float gain) -> Tensor");
  m.def("grid_sample_2d(Tensor input, Tensor grid) -> Tensor");
  m.def(
      "grid_sample_2d_backward(Tensor grad_out, Tensor input, Tensor grid, bool input_grad, bool grid_grad) "
      "-> (Tensor, Tensor)");
  // Trilinear point-to-volume lookup (volume_sample.h) with its backward and double backward.
  m.def("volume_sample_3d(Tensor volume, Tensor points) -> Tensor");
  m.def(
      "volume_sample_3d_backward(Tensor grad_out, Tensor volume, Tensor points, bool volume_grad, "
      "bool points_grad) -> (Tensor, Tensor)");
  m.def(
      "volume_sample_3d_double_backward(Tensor grad_out, Tensor volume, Tensor points, Tensor? gg_volume, "
      "Tensor? gg_points, bool out_grad, bool volume_grad, bool points_grad) -> (Tensor, Tensor, Tensor)");
  // Tile transforms of the Winograd F(4x4, 3x3) convolution (winograd_cpu.cpp, CPU only).
  m.def("winograd_tiles(Tensor x, int kind, int tiles_h, int tiles_w) -> Tensor");
  m.def("winograd_untiles(Tensor m, int kind, int N, int H, int W) -> Tensor");
  m.def("has_cuda() -> bool", &has_cuda);
}

}  // namespace suite_ops
