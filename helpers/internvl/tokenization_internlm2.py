"""InternLM2's tokenizer as a "slow" transformers tokenizer over a sentencepiece model.

The course's own implementation of the interface the published InternVL2-2B directory has
(``tokenizer_config.json`` names ``InternLM2Tokenizer`` through ``auto_map``): the vocabulary
lives in ``tokenizer.model`` (sentencepiece, byte fallback); ``<s>`` is put in front of every
encoded text; the chat markers and image tokens are special tokens that are never split.
It is remote code: it imports nothing from the course and runs under transformers 4.48 and 5.x.

Example:
    >>> # tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    >>> # tok("你好").input_ids[0] == tok.bos_token_id
"""
import os
import shutil

import sentencepiece as spm
from transformers import PreTrainedTokenizer

VOCAB_FILES_NAMES = {"vocab_file": "tokenizer.model"}


class InternLM2Tokenizer(PreTrainedTokenizer):
    """Sentencepiece tokenizer with InternLM2's special tokens.

    Args:
        vocab_file: path of ``tokenizer.model``.
        unk_token, bos_token, eos_token, pad_token: as in InternLM2 (``<unk>``, ``<s>``, ``</s>``, ``</s>``).
        sp_model_kwargs: extra arguments of ``SentencePieceProcessor``.
        add_bos_token: put ``<s>`` in front of every sequence (InternLM2 does).
        add_eos_token: put ``</s>`` after every sequence (InternLM2 does not).
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>",
                 sp_model_kwargs=None, add_bos_token=True, add_eos_token=False, **kwargs):
        self.vocab_file = vocab_file
        self.sp_model_kwargs = dict(sp_model_kwargs or {})
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        # Loaded before the base class starts: its __init__ already asks for the vocabulary.
        self.sp_model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        self.sp_model.Load(vocab_file)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
                         sp_model_kwargs=self.sp_model_kwargs, add_bos_token=add_bos_token,
                         add_eos_token=add_eos_token, **kwargs)

    # A SentencePieceProcessor does not pickle (DataLoader workers, multiprocessing): send its bytes.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["sp_model"] = None
        state["_sp_proto"] = self.sp_model.serialized_model_proto()
        return state

    def __setstate__(self, state):
        proto = state.pop("_sp_proto")
        self.__dict__.update(state)
        self.sp_model = spm.SentencePieceProcessor(**self.sp_model_kwargs)
        self.sp_model.LoadFromSerializedProto(proto)

    @property
    def vocab_size(self):
        return self.sp_model.get_piece_size()

    def get_vocab(self):
        vocab = {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text, **kwargs):
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token):
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index):
        return self.sp_model.id_to_piece(index)

    def convert_tokens_to_string(self, tokens):
        """Pieces back to text; special tokens are kept as written, byte pieces are decoded."""
        specials = set(self.all_special_tokens)
        out, run = [], []
        for token in tokens:
            if token in specials:
                out.append(self.sp_model.decode(run))
                out.append(token)
                run = []
            else:
                run.append(token)
        out.append(self.sp_model.decode(run))
        return "".join(out)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        out = bos + list(token_ids_0) + eos
        if token_ids_1 is not None:
            out += bos + list(token_ids_1) + eos
        return out

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        bos = [1] if self.add_bos_token else []
        eos = [1] if self.add_eos_token else []
        mask = bos + [0] * len(token_ids_0) + eos
        if token_ids_1 is not None:
            mask += bos + [0] * len(token_ids_1) + eos
        return mask

    def create_token_type_ids_from_sequences(self, token_ids_0, token_ids_1=None):
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    def save_vocabulary(self, save_directory, filename_prefix=None):
        if not os.path.isdir(save_directory):
            raise ValueError(f"save_vocabulary: {save_directory} is not a directory")
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        out = os.path.join(save_directory, name)
        if os.path.abspath(self.vocab_file) != os.path.abspath(out):
            if os.path.isfile(self.vocab_file):
                shutil.copyfile(self.vocab_file, out)
            else:
                with open(out, "wb") as f:
                    f.write(self.sp_model.serialized_model_proto())
        return (out,)
