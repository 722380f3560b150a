"""Inference server for scikit-learn models: KServe V2 (Open Inference Protocol), KServe V1 and
MLflow scoring on one port, built to start fast as a scale-to-zero Knative Service."""
