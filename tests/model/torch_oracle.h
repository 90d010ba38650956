// The file exchange between a model test and its PyTorch reference script
// (tests/reference/*_torch.py): raw little-endian arrays plus manifest.json in
// a temporary directory; the script writes its float64 results back there.
// Also the AdamW steps both sides take on the same batch.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "backend/ops.h"
#include "model/model.h"
#include "nn/parameter.h"

namespace keel::model::torch_oracle {

namespace fs = std::filesystem;
inline constexpr const char* kPython = "/usr/bin/python3";

inline std::vector<double> read_f64(const fs::path& p, size_t n) {
  std::vector<double> v(n);
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + p.string());
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * 8));
  if (size_t(f.gcount()) != n * 8) throw std::runtime_error("short file " + p.string());
  return v;
}

inline std::vector<int32_t> read_i32(const fs::path& p, size_t n) {
  std::vector<int32_t> v(n);
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + p.string());
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * 4));
  if (size_t(f.gcount()) != n * 4) throw std::runtime_error("short file " + p.string());
  return v;
}

inline void write_raw(const fs::path& p, const void* data, size_t bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(static_cast<const char*>(data), std::streamsize(bytes));
  if (!f) throw std::runtime_error("cannot write " + p.string());
}

// max |a - b| / max |b|
inline double rel_err(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(double(a[i]) - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return den > 0 ? num / den : num;
}

// Writes the batch, every parameter and the AdamW settings into dir, records
// them in man (whose "config" the caller has filled) and writes manifest.json.
inline void write_inputs(const fs::path& dir, nlohmann::json& man, const std::vector<int32_t>& ids,
                         const std::vector<int32_t>& targets, int64_t B, int64_t T,
                         const std::vector<nn::Parameter*>& params, const backend::AdamWArgs& opt,
                         int steps) {
  man["B"] = B;
  man["T"] = T;
  man["ids"] = "ids.i32";
  man["targets"] = "targets.i32";
  write_raw(dir / "ids.i32", ids.data(), ids.size() * 4);
  write_raw(dir / "targets.i32", targets.data(), targets.size() * 4);
  for (size_t i = 0; i < params.size(); ++i) {
    const nn::Parameter& p = *params[i];
    const std::string file = fmt::format("p.{}.f32", i);
    write_raw(dir / file, p.value.raw(), p.value.nbytes());
    man["params"].push_back(
        {{"name", p.name}, {"shape", p.value.shape().dims()}, {"file", file}, {"decay", p.decay}});
  }
  man["adamw"] = {{"lr", opt.lr},
                  {"beta1", opt.beta1},
                  {"beta2", opt.beta2},
                  {"eps", opt.eps},
                  {"weight_decay", opt.weight_decay},
                  {"steps", steps}};
  std::ofstream(dir / "manifest.json") << man.dump(1);
}

// Runs tests/reference/<script> on dir; returns "" on success, else the
// command and the script's output.
inline std::string run_reference(const std::string& script, const fs::path& dir) {
  const std::string cmd =
      fmt::format("{} {}/tests/reference/{} {} > {} 2>&1", kPython, KEEL_SOURCE_DIR, script,
                  dir.string(), (dir / "python.log").string());
  if (std::system(cmd.c_str()) == 0) return "";
  std::ifstream log(dir / "python.log");
  return cmd + ":\n" +
         std::string((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
}

// The reference scripts' AdamW steps on the same batch: step 0 on the
// gradients params already hold, each later one after a fresh
// forward_backward, weight decay only where Parameter::decay. Returns the
// worst relative difference of those later steps' losses from ref_losses.
inline double adamw_steps(Model& model, backend::Backend& be,
                          const std::vector<nn::Parameter*>& params, const backend::AdamWArgs& opt,
                          int steps, const Tensor& ids, const Tensor& targets,
                          const std::vector<double>& ref_losses) {
  std::vector<Tensor> m, v;
  for (const nn::Parameter* p : params) {
    m.push_back(Tensor::zeros(p->value.shape(), DType::F32));
    v.push_back(Tensor::zeros(p->value.shape(), DType::F32));
  }
  double worst_step_loss = 0;
  for (int s = 0; s < steps; ++s) {
    if (s > 0) {
      model.zero_grad();
      const float l = model.forward_backward(ids, targets, 1.f);
      worst_step_loss = std::max(
          worst_step_loss, std::abs(l - ref_losses[size_t(s)]) / std::abs(ref_losses[size_t(s)]));
    }
    for (size_t i = 0; i < params.size(); ++i) {
      nn::Parameter& p = *params[i];
      backend::AdamWArgs a = opt;
      a.weight_decay = p.decay ? opt.weight_decay : 0.f;
      a.t = s + 1;
      a.n = p.numel();
      Tensor none;
      ops::adamw_update(be, a, p.value, p.grad, m[i], v[i], none);
    }
    model.sync_compute_weights();
  }
  return worst_step_loss;
}

}  // namespace keel::model::torch_oracle
