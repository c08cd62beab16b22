// What the plan's randomized tests share: picking at random, and a request
// that carries fields this build does not know (tests/proto/future.proto).
#pragma once

#include "compute_driver.pb.h"
#include "future.pb.h"

#include <google/protobuf/util/json_util.h>
#include <catch2/catch.hpp>

#include <random>
#include <vector>

namespace owrap::test {

template <typename T>
const T& pick(std::mt19937& rng, const std::vector<T>& from) {
  return from[rng() % from.size()];
}

// `json_text` as a DriverSandbox holding unknown fields at three levels.
inline openshell::compute::v1::DriverSandbox with_unknown_fields(const char* json_text) {
  openshell::compute::v1::DriverSandbox known;
  REQUIRE(google::protobuf::util::JsonStringToMessage(json_text, &known).ok());
  openshell::compute::future::FutureSandbox future;
  REQUIRE(future.ParseFromString(known.SerializeAsString()));
  future.set_future_note("from a newer gateway");
  future.mutable_spec()->set_future_spec_field("spec-level");
  future.mutable_spec()->mutable_template_()->set_future_template_field(4242);
  openshell::compute::v1::DriverSandbox out;
  REQUIRE(out.ParseFromString(future.SerializeAsString()));
  return out;
}

}  // namespace owrap::test
