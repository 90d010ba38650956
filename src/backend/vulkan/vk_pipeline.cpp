// Pipeline creation and caching; the SPIR-V comes from the binary itself, so
// nothing is read from disk at run time.
#include "backend/vulkan/vk_pipeline.h"

#include <vector>

#include "backend/vulkan/vk_check.h"
#include "backend/vulkan/vk_context.h"

namespace keel::vulkan {

PipelineCache::~PipelineCache() {
  for (auto& [name, p] : cache_) {
    vkDestroyPipeline(ctx_.device(), p.pipeline, nullptr);
    vkDestroyPipelineLayout(ctx_.device(), p.layout, nullptr);
    vkDestroyDescriptorSetLayout(ctx_.device(), p.set_layout, nullptr);
  }
}

const Pipeline& PipelineCache::get(std::string_view name, uint32_t bindings, uint32_t push_bytes) {
  if (auto it = cache_.find(name); it != cache_.end()) {
    if (it->second.bindings != bindings || it->second.push_bytes != push_bytes)
      fail("Vulkan: shader {} requested with {} bindings / {} push bytes, cached with {} / {}",
           name, bindings, push_bytes, it->second.bindings, it->second.push_bytes);
    return it->second;
  }
  const ShaderBinary* bin = nullptr;
  for (const auto& s : embedded_shaders())
    if (name == s.name) bin = &s;
  if (!bin) fail("Vulkan: no embedded shader named '{}'", name);

  VkDevice dev = ctx_.device();
  Pipeline p;
  p.bindings = bindings;
  p.push_bytes = push_bytes;
  VkShaderModule module = VK_NULL_HANDLE;
  try {
    std::vector<VkDescriptorSetLayoutBinding> b(bindings);
    for (uint32_t i = 0; i < bindings; ++i) {
      b[i].binding = i;
      b[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      b[i].descriptorCount = 1;
      b[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
    }
    VkDescriptorSetLayoutCreateInfo dl{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    // Push descriptors: buffers are bound per dispatch, no descriptor pools.
    dl.flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR;
    dl.bindingCount = bindings;
    dl.pBindings = b.data();
    check(vkCreateDescriptorSetLayout(dev, &dl, nullptr, &p.set_layout),
          "vkCreateDescriptorSetLayout");
    VkPushConstantRange pr{VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes};
    VkPipelineLayoutCreateInfo pl{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    pl.setLayoutCount = 1;
    pl.pSetLayouts = &p.set_layout;
    pl.pushConstantRangeCount = push_bytes ? 1 : 0;
    pl.pPushConstantRanges = &pr;
    check(vkCreatePipelineLayout(dev, &pl, nullptr, &p.layout), "vkCreatePipelineLayout");
    VkShaderModuleCreateInfo sm{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
    sm.codeSize = bin->count * sizeof(uint32_t);
    sm.pCode = bin->words;
    check(vkCreateShaderModule(dev, &sm, nullptr, &module), "vkCreateShaderModule");
    VkComputePipelineCreateInfo ci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    ci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = module;
    ci.stage.pName = "main";
    ci.layout = p.layout;
    check(vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &ci, nullptr, &p.pipeline),
          fmt::format("vkCreateComputePipelines({})", name));
    vkDestroyShaderModule(dev, module, nullptr);
  } catch (...) {
    if (module) vkDestroyShaderModule(dev, module, nullptr);
    if (p.pipeline) vkDestroyPipeline(dev, p.pipeline, nullptr);
    if (p.layout) vkDestroyPipelineLayout(dev, p.layout, nullptr);
    if (p.set_layout) vkDestroyDescriptorSetLayout(dev, p.set_layout, nullptr);
    throw;
  }
  return cache_.emplace(std::string(name), p).first->second;
}

}  // namespace keel::vulkan
