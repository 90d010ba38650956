// Constructors of the architectures behind make_model (cfg already resolved).
#pragma once
#include <memory>

#include "model/model.h"

namespace keel::model {

std::unique_ptr<Model> make_gpt2(const ModelConfig& cfg, backend::Backend& be);
std::unique_ptr<Model> make_llama(const ModelConfig& cfg, backend::Backend& be);
std::unique_ptr<Model> make_deepseek(const ModelConfig& cfg, backend::Backend& be);
// Fills the deepseek defaults into c and checks them (ConfigError naming the key).
void resolve_deepseek(ModelConfig& c);

}  // namespace keel::model
