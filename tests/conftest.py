import jax

# Float64 parity needs x64; float32 cases ask for float32 explicitly.
jax.config.update("jax_enable_x64", True)
