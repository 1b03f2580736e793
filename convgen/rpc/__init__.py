"""gRPC plumbing shared by both services: status mapping, interceptors, server lifecycle, channels."""
