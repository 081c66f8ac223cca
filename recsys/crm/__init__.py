"""Grounded CRM messages: product facts (RAG), a prompt/writer per tone, a claim checker and its evaluation.

    facts = FactIndex.from_rows(item_rows)                       # snippets embedded once (MiniLM default)
    result = write_messages(Segment("미니멀 20대", {"age_band": "20s"}), ["P1", "P2"], facts,
                            make_writer(LLMConfig()), CrmConfig(), channel="kakao", goal="봄 신상")
    result.messages      # one per tone, each with product_ids and source_ids; result.rejected with reasons

Modules: ``facts`` (snippets, FactIndex), ``claims`` (Vocabulary, check_message), ``messages``
(CrmConfig, prompt, TemplateWriter, write_messages), ``evaluation`` (injected false claims, P/R/F1).
"""
