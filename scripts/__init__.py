"""RestoreKit's library: pure functions on numpy arrays and torch tensors. Never imports ComfyUI."""
