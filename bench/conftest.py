"""bench/ is run as ``pytest bench/``; the plugin (bench.plugin) is registered as an entry point."""
