// The conformance checks of each kernel family, one function per family
// (grouped into files by kind). Each opens its rows on the harness and runs
// its cases; run_conformance() calls them all in Kernel order.
#pragma once
#include <string>

#include "backend/conformance/harness.h"

namespace keel::backend::conformance {

void check_matmul(Harness& h);
void check_quantize(Harness& h);
void check_qmatmul(Harness& h);
void check_embedding(Harness& h);
void check_layernorm(Harness& h);
void check_rmsnorm(Harness& h);
void check_rope(Harness& h);
void check_attention(Harness& h);
void check_gelu(Harness& h);
void check_silu(Harness& h);
void check_swiglu(Harness& h);
void check_add(Harness& h);
void check_bias_add(Harness& h);
void check_cross_entropy(Harness& h);
void check_adamw(Harness& h);
void check_reduce(Harness& h);
void check_sum_squares(Harness& h);
void check_cast(Harness& h);
// Mixture of experts (check_moe.cpp).
void check_moe_route(Harness& h);
void check_moe_permute(Harness& h);
void check_grouped_matmul(Harness& h);
// Layouts (check_layout.cpp).
void check_copy_rows(Harness& h);
void check_mla_qkv(Harness& h);

// Activation dtypes a family is tried in: F32 and BF16 always (a missing one
// is a SKIP row), F16 only where candidate or oracle claims it.
std::vector<DType> activation_dtypes(Harness& h, Kernel k);
std::string dims(std::initializer_list<std::pair<const char*, int64_t>> d);

}  // namespace keel::backend::conformance
