"""The operator side of llmbatch: the client SDK (:mod:`llmbatch.client`), the CLI
(:mod:`llmbatch.cli`), the local stack (:mod:`llmbatch.local`) and the benchmark
(:mod:`llmbatch.bench`). None of it ships to Lambda: the functions run ``shared/`` alone."""
