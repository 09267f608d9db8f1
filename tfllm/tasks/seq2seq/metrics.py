"""Scores of translations: corpus BLEU and chrF by sacrebleu, the reference
implementation, with its Chinese tokenizer when the references are Chinese."""


def is_chinese(texts):
    """Whether CJK characters are most of the texts' non-space characters."""
    letters = [c for text in texts for c in text if not c.isspace()]
    cjk = sum("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in letters)
    return bool(letters) and cjk / len(letters) > 0.5


def translation_scores(hypotheses, references):
    """{"bleu", "chrf", "bleu_tokenize", "pairs"} of `hypotheses` against one reference
    each (sacrebleu's corpus scores, 0-100)."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} translations for {len(references)} references")
    tokenize = "zh" if is_chinese(references) else "13a"
    bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize)
    chrf = sacrebleu.corpus_chrf(hypotheses, [references])
    return {"bleu": bleu.score, "chrf": chrf.score, "bleu_tokenize": tokenize,
            "pairs": len(hypotheses)}
