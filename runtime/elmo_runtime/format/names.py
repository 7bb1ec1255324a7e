"""The names of the graph's tensors (the contract table, :mod:`.contract`, gives each its
dtype and dims; the packer, :mod:`.chars`, names its feed with them)."""

INPUT_TOKEN_CHARS = "token_chars"
INPUT_CACHED_VECTORS = "cached_vectors"
INPUT_TOKEN_INDEX = "token_index"
INPUT_STATE_C = "state_c"
INPUT_STATE_H = "state_h"
OUTPUT_LAYERS = "layers"
OUTPUT_MASK = "mask"
OUTPUT_STATE_C = "final_state_c"
OUTPUT_STATE_H = "final_state_h"
OUTPUT_TOKEN_VECTORS = "token_vectors"
INPUT_WORD_IDS = "word_ids"

# The output files' layout (AllenNLP's `elmo` command): the dataset that maps each input line
# to its key. Writers write it; FASTA record ids may not take it.
SENTENCE_TO_INDEX = "sentence_to_index"
