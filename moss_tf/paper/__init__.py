"""The paper's reproduction: tables as commands (:mod:`.experiments`, :mod:`.tables`,
:mod:`.report`), figures (:mod:`.figures`) and training curves (:mod:`.curves`)."""
