"""The inference subsystem: model handles, safe model files, the zoo of supported architectures,
memory measuring and tile planning, tiled execution and the memory-safe runner, and the runtime
services (device, free memory, progress, interrupts) that ComfyUI's adapter replaces."""
