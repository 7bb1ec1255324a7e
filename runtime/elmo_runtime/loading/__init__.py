"""How a model is found and opened (ARCHITECTURE.md, ``loading/``): ``model_file`` → ``session``
→ ``prepared`` → ``loaded.open_model``. Import the modules themselves; this package imports
nothing, so that importing one room never drags in the others."""
