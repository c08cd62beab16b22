#include "proxy/builtin_stages.h"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

namespace owrap {

Stage capabilities_stage(const WrapperConfig& config, HookChain* chain) {
  return Stage{
      "capabilities",
      rpc_set({Rpc::kGetCapabilities}),
      nullptr,
      [name = config.name, image = config.default_image, lifecycle = config.gateway_manages_lifecycle,
       delegate = config.delegate.name, chain](CallState&, google::protobuf::Message& response, const Resume&) {
        auto& caps = response_as<Rpc::kGetCapabilities>(response);
        std::string base = caps.driver_name().empty() ? delegate : caps.driver_name();
        if (chain) chain->set_delegate_version(base + " " + caps.driver_version());
        std::string hooks = chain ? chain->summary() : "";
        caps.set_driver_version(std::string("openshell-driver-wrapper ") + OWRAP_VERSION + " (delegate " + delegate +
                                ": " + base + " " + caps.driver_version() + ")" + (hooks.empty() ? "" : "; " + hooks));
        caps.set_driver_name(name);
        if (image) caps.set_default_image(*image);
        if (lifecycle) caps.set_gateway_manages_lifecycle(*lifecycle);
        return StepResult::done();
      },
      nullptr,
  };
}

Stage delay_stage(boost::asio::io_context& io, const TestingStageConfig& config) {
  return Stage{
      "testing_delay",
      config.rpcs,
      [&io, delay = config.delay, timeout = config.timeout](CallState&, google::protobuf::Message&,
                                                            const Resume& resume) {
        auto timer = std::make_shared<boost::asio::steady_timer>(io, delay);
        timer->async_wait([timer, resume](const boost::system::error_code&) { resume(); });
        // A cancelled call stops waiting for the timer too.
        resume.on_cancel([timer, &io] { boost::asio::post(io, [timer] { timer->cancel(); }); });
        return StepResult::suspended(timeout);
      },
      nullptr,
      nullptr,
  };
}

}  // namespace owrap
