"""bilm-tf / AllenNLP weight files (options.json + weights.hdf5): read, check, write.

Torch-free (NumPy; h5py when a file is read or written). Imports no other room.
"""
