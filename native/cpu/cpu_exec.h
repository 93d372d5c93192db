// The CPU backend's plan runner (ExecIface::run).
#pragma once

#include "backend.h"

namespace fm::cpu {
void run_plan(void *device_ctx, void *exec_ctx, const Plan &plan, const Bindings &bindings, void *stream_ctx);
}
