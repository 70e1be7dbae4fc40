"""vaner: biomedical named-entity recognition with an instruction-conditioned bidirectional LLaMA
tagger, a versioned UMLS knowledge base and Dense Bioentities Recognition (VANER)."""

import os

__version__ = "0.1.0"

# gRPC's fork handlers restart its epoll poller in a forked child; when that child is a
# subprocess.Popen about to exec, close_fds has already closed the poller's fd and the process
# aborts ("epoll_wait error: Bad file descriptor", grpc/grpc#43055, grpcio >= 1.81). vaner never
# forks to keep using gRPC in the child (the supervisor and tests fork only to exec), so fork
# support is off unless the user set it. This runs before any package here imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
