import tfp_vae._env  # noqa: F401  (must run before anything imports tensorflow)
