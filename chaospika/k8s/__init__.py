"""Kubernetes: kill the pods of one workload, time its recovery and the downtime.

`actions.kill_pods` (a fault in the ledger, known to the safety control),
`probes.wait_for_recovery`, `probes.downtime`, `probes.pods_ready` and
`probes.pod_kill_outcome`. The API client is chaostoolkit-kubernetes' (extra
``k8s``); nothing here imports it until an activity runs.
"""
