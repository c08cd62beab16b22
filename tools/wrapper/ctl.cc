#include "tools/wrapper/ctl.h"

#include "common/grpc_util.h"
#include "compute_driver.grpc.pb.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

namespace owrap {

namespace v1 = openshell::compute::v1;

namespace {

constexpr const char* kUsage =
    "usage: openshell-driver-wrapper ctl --socket PATH [--timeout DURATION] [--metadata KEY=VALUE]... VERB [ARGS]\n"
    "verbs:\n"
    "  caps                         GetCapabilities\n"
    "  listeners                    GetGatewayListenerRequirements\n"
    "  validate [FILE|-]            ValidateSandboxCreate with a DriverSandbox JSON\n"
    "  create [FILE|-]              CreateSandbox with a DriverSandbox JSON\n"
    "  get ID | stop ID | start ID | delete ID\n"
    "  list                         ListSandboxes\n"
    "  watch [--count N]            WatchSandboxes, one JSON event per line\n"
    "  ensure-workspace NAME | delete-workspace NAME\n"
    "DURATION: 500ms, 5s, 2m or a number of seconds. The socket defaults to $OPENSHELL_COMPUTE_DRIVER_SOCKET.\n";

struct CtlOptions {
  std::string socket;
  std::optional<std::chrono::milliseconds> timeout;
  std::vector<std::pair<std::string, std::string>> metadata;
};

void prepare(grpc::ClientContext& ctx, const CtlOptions& o) {
  if (o.timeout) ctx.set_deadline(std::chrono::system_clock::now() + *o.timeout);
  for (const auto& [k, v] : o.metadata) ctx.AddMetadata(k, v);
}

std::string to_json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  return out;
}

int report(const grpc::Status& s, const google::protobuf::Message& response) {
  if (!s.ok()) {
    std::cerr << status_code_name(s.error_code()) << ": " << s.error_message() << "\n";
    return 1;
  }
  std::cout << to_json(response) << "\n";
  return 0;
}

bool read_sandbox(const std::string& file, v1::DriverSandbox& sandbox) {
  std::stringstream buf;
  if (file.empty() || file == "-") {
    buf << std::cin.rdbuf();
  } else {
    std::ifstream in(file);
    if (!in) {
      std::cerr << "ctl: cannot read " << file << "\n";
      return false;
    }
    buf << in.rdbuf();
  }
  google::protobuf::util::JsonParseOptions opts;
  auto st = google::protobuf::util::JsonStringToMessage(buf.str(), &sandbox, opts);
  if (!st.ok()) {
    std::cerr << "ctl: " << (file.empty() ? "-" : file) << ": not a DriverSandbox JSON: " << st.message() << "\n";
    return false;
  }
  return true;
}

int watch(v1::ComputeDriver::Stub& stub, const CtlOptions& o, long count) {
  grpc::ClientContext ctx;
  prepare(ctx, o);
  v1::WatchSandboxesRequest req;
  auto reader = stub.WatchSandboxes(&ctx, req);
  v1::WatchSandboxesEvent ev;
  long seen = 0;
  while ((count <= 0 || seen < count) && reader->Read(&ev)) {
    std::cout << to_json(ev) << std::endl;
    seen++;
  }
  if (count > 0 && seen >= count) {
    ctx.TryCancel();
    reader->Finish();
    return 0;
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) {
    std::cerr << status_code_name(s.error_code()) << ": " << s.error_message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int run_ctl(const std::vector<std::string>& args) {
  CtlOptions o;
  if (const char* env = std::getenv("OPENSHELL_COMPUTE_DRIVER_SOCKET")) o.socket = env;
  size_t i = 0;
  for (; i < args.size(); i++) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (a.rfind("--", 0) != 0) break;
    if (i + 1 >= args.size()) {
      std::cerr << "ctl: " << a << " needs a value\n" << kUsage;
      return 2;
    }
    const std::string& v = args[++i];
    if (a == "--socket")
      o.socket = v;
    else if (a == "--timeout") {
      o.timeout = parse_duration(v);
      if (!o.timeout) {
        std::cerr << "ctl: --timeout: cannot parse \"" << v << "\"\n";
        return 2;
      }
    } else if (a == "--metadata") {
      auto eq = v.find('=');
      if (eq == std::string::npos) {
        std::cerr << "ctl: --metadata expects KEY=VALUE\n";
        return 2;
      }
      o.metadata.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else {
      std::cerr << "ctl: unknown option " << a << "\n" << kUsage;
      return 2;
    }
  }
  if (i >= args.size()) {
    std::cerr << kUsage;
    return 2;
  }
  if (o.socket.empty()) {
    std::cerr << "ctl: --socket PATH is required\n";
    return 2;
  }
  const std::string verb = args[i];
  std::vector<std::string> rest(args.begin() + static_cast<long>(i) + 1, args.end());
  std::string target = o.socket.rfind("unix:", 0) == 0 ? o.socket : "unix:" + o.socket;
  auto stub = v1::ComputeDriver::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  prepare(ctx, o);
  auto need_arg = [&](const char* what) -> bool {
    if (rest.size() == 1) return true;
    std::cerr << "ctl: " << verb << " takes exactly one " << what << "\n";
    return false;
  };

  if (verb == "caps") {
    v1::GetCapabilitiesResponse r;
    return report(stub->GetCapabilities(&ctx, {}, &r), r);
  }
  if (verb == "listeners") {
    v1::GetGatewayListenerRequirementsResponse r;
    return report(stub->GetGatewayListenerRequirements(&ctx, {}, &r), r);
  }
  if (verb == "validate" || verb == "create") {
    v1::DriverSandbox sandbox;
    if (!read_sandbox(rest.empty() ? "-" : rest[0], sandbox)) return 2;
    if (verb == "validate") {
      v1::ValidateSandboxCreateRequest req;
      *req.mutable_sandbox() = sandbox;
      v1::ValidateSandboxCreateResponse r;
      return report(stub->ValidateSandboxCreate(&ctx, req, &r), r);
    }
    v1::CreateSandboxRequest req;
    *req.mutable_sandbox() = sandbox;
    v1::CreateSandboxResponse r;
    return report(stub->CreateSandbox(&ctx, req, &r), r);
  }
  if (verb == "get" || verb == "stop" || verb == "start" || verb == "delete") {
    if (!need_arg("sandbox id")) return 2;
    if (verb == "get") {
      v1::GetSandboxRequest req;
      req.set_sandbox_id(rest[0]);
      v1::GetSandboxResponse r;
      return report(stub->GetSandbox(&ctx, req, &r), r);
    }
    if (verb == "stop") {
      v1::StopSandboxRequest req;
      req.set_sandbox_id(rest[0]);
      v1::StopSandboxResponse r;
      return report(stub->StopSandbox(&ctx, req, &r), r);
    }
    if (verb == "start") {
      v1::StartSandboxRequest req;
      req.set_sandbox_id(rest[0]);
      v1::StartSandboxResponse r;
      return report(stub->StartSandbox(&ctx, req, &r), r);
    }
    v1::DeleteSandboxRequest req;
    req.set_sandbox_id(rest[0]);
    v1::DeleteSandboxResponse r;
    return report(stub->DeleteSandbox(&ctx, req, &r), r);
  }
  if (verb == "list") {
    v1::ListSandboxesResponse r;
    return report(stub->ListSandboxes(&ctx, {}, &r), r);
  }
  if (verb == "watch") {
    long count = 0;
    if (rest.size() == 2 && rest[0] == "--count")
      count = std::atol(rest[1].c_str());
    else if (!rest.empty()) {
      std::cerr << "ctl: watch takes only --count N\n";
      return 2;
    }
    return watch(*stub, o, count);
  }
  if (verb == "ensure-workspace" || verb == "delete-workspace") {
    if (!need_arg("workspace name")) return 2;
    if (verb == "ensure-workspace") {
      v1::EnsureWorkspaceRequest req;
      req.set_workspace(rest[0]);
      v1::EnsureWorkspaceResponse r;
      return report(stub->EnsureWorkspace(&ctx, req, &r), r);
    }
    v1::DeleteWorkspaceRequest req;
    req.set_workspace(rest[0]);
    v1::DeleteWorkspaceResponse r;
    return report(stub->DeleteWorkspace(&ctx, req, &r), r);
  }
  std::cerr << "ctl: unknown verb " << verb << "\n" << kUsage;
  return 2;
}

}  // namespace owrap
