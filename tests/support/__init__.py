"""The test kit that tests and bench/ share: real servers (PostgreSQL, moto S3, the Messages API stand-in), the
services in-process or as a process cluster, the demo catalog and seed requests, and job helpers.

postgres.py, moto_s3.py and s3.py, messages_api.py: the real servers and ways to reach them; services.py: both
services in-process; processes.py and cluster.py: `convgen serve` processes and a deployment of them;
demo_catalog.py, jobs.py: what requests are made of and how a job is waited for; tcp_proxy.py, chaos.py,
certificates.py, reflection_client.py: faults, TLS and reflection; checkout.py: where the checkout is.
"""
