"""Serving: SavedModel export, a TF-Serving-compatible local server, clients.

Submodules are imported explicitly, so that a light client does not pull in TensorFlow:

    from serving.export import ExportConfig, export_run    # saved_models/<name>/<version>/
"""
