// `anomalysd bench --profile`'s operator table (tools/op_profile.h): LibTorch's profiler events
// attributed to operators, ours (the fused attention) included, sorted by self time.
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "anomalysd/models/attention_kernels.h"
#include "anomalysd/tools/op_profile.h"

namespace anomalysd {
namespace {

TEST(OpProfile, AttributesTimeToOperators) {
  torch::NoGradGuard no_grad;
  set_attention_kernel(AttentionKernel::Fused);
  const torch::Tensor q = torch::randn({1, 2, 256, 32}), a = torch::randn({64, 64});
  struct RestoreKernel {
    ~RestoreKernel() { set_attention_kernel(AttentionKernel::Auto); }
  } restore;
  const auto ops = profile_ops([&] {
    for (int i = 0; i < 3; ++i) (void)torch::mm(a, a);
    (void)anomalysd::scaled_dot_product_attention(q, q, q);
  });
  ASSERT_FALSE(ops.empty());
  const auto find = [&](const std::string& name) {
    for (const auto& o : ops)
      if (o.name == name) return o;
    return OpTime{};
  };
  EXPECT_GE(find("aten::mm").calls, 3) << format_op_table(ops);
  const OpTime fused = find("anomalysd::attention_fused");
  EXPECT_EQ(fused.calls, 1);
  EXPECT_GT(fused.total_ms, 0.0);
  EXPECT_GE(fused.total_ms + 1e-9, fused.self_ms);
  for (std::size_t i = 1; i < ops.size(); ++i) EXPECT_GE(ops[i - 1].self_ms, ops[i].self_ms);  // sorted
  const std::string table = format_op_table(ops, 3);
  EXPECT_NE(table.find("self ms"), std::string::npos);
  EXPECT_NE(table.find("(all others)"), std::string::npos);
}

}  // namespace
}  // namespace anomalysd
