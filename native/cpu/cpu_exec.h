// The CPU backend's plan runner (ExecIface::run).
#pragma once

#include "backend.h"

namespace fm::cpu {
// ExecIface::compile / release: the plan's lowering (cross-step fusions, see
// cpu_exec.cpp), computed once per compiled plan.
void *compile_plan(void *device_ctx, const Plan &plan);
void release_plan(void *device_ctx, void *exec_ctx);
void run_plan(void *device_ctx, void *exec_ctx, const Plan &plan, const Bindings &bindings, void *stream_ctx);
}
