// The config schema: one row per dotted key with its type and the check its
// value must pass. Parsing, overrides and TOML output all walk this table, so
// a key cannot be readable but not writable, or typed one way in the file and
// another on the command line.
#pragma once
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/config.h"

namespace keel::io {

enum class FieldKind { Int, UInt, Float, Bool, String, DTypeName };
enum class FieldCheck { None, Positive, NonNegative, UnitInterval /*[0, 1)*/, Choices };

struct ConfigField {
  std::string_view key;  // "train.lr"
  FieldKind kind;
  FieldCheck check;
  std::vector<std::string_view> choices;  // FieldCheck::Choices (and DTypeName)
  void* (*member)(Config&);               // address of the value inside a Config
};

// A value read from TOML or the command line, before it is checked and stored.
struct FieldValue {
  int64_t i = 0;
  double f = 0;
  bool b = false;
  std::string s;
};

std::span<const ConfigField> config_fields();
// nullptr when the key is not in the schema.
const ConfigField* find_config_field(std::string_view key);
// "integer", "float", ... for error messages.
std::string_view field_kind_name(FieldKind k);
// Checks `v` against the field and stores it; `where` ("file:line" or
// "override 'k=v'") starts the ConfigError message.
void store_config_field(Config& cfg, const ConfigField& f, const FieldValue& v,
                        const std::string& where);
// The stored value as a TOML literal.
std::string format_config_field(const Config& cfg, const ConfigField& f);

}  // namespace keel::io
