"""Privacy filter: personal data becomes typed placeholders before a request leaves the device.

from runtime.privacy import PrivacyConfig, PrivacyFilter, Vault

privacy = PrivacyFilter.from_config(PrivacyConfig())   # models load on first use
vault = Vault()                                         # one per conversation, stays here
red = privacy.redact_messages(messages, vault)
red.raise_if_blocked()                                  # PrivacyBlockError: stay local
answer = privacy.restore(cloud_text, vault).text        # or privacy.stream_restorer(vault)
tandem["redactions"] = red.to_dict()                    # counts per type, never values
"""

from runtime.privacy.entities import (
    ENTITY_TYPES,
    STRUCTURED_TYPES,
    ContextDetector,
    Detector,
    Span,
)
from runtime.privacy.filter import (
    MessagesRedaction,
    PrivacyFilter,
    Redaction,
    build_detectors,
    structured_detectors,
)
from runtime.privacy.policy import ACTIONS, CATEGORIES, PrivacyConfig, PrivacyPolicy
from runtime.privacy.restore import Restored, StreamRestorer, restore
from runtime.privacy.vault import Vault

__all__ = [
    "ACTIONS",
    "CATEGORIES",
    "ENTITY_TYPES",
    "STRUCTURED_TYPES",
    "ContextDetector",
    "Detector",
    "MessagesRedaction",
    "PrivacyConfig",
    "PrivacyFilter",
    "PrivacyPolicy",
    "Redaction",
    "Restored",
    "Span",
    "StreamRestorer",
    "Vault",
    "build_detectors",
    "restore",
    "structured_detectors",
]
