"""Text descriptors of remote-sensing scenes and land cover, encoded by a frozen text encoder (shared by TAR and
PromptMID)."""

from osreg.text.bank import (
    LAND_COVER,
    SCENES,
    TEMPLATES,
    TextBank,
    bank_prompts,
    load_bank,
)

__all__ = ["LAND_COVER", "SCENES", "TEMPLATES", "TextBank", "bank_prompts", "load_bank"]
