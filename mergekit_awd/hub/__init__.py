"""Publishing merges: the extended model card and the upload to the Hugging Face Hub."""

from mergekit_awd.hub.card import write_model_card
from mergekit_awd.hub.upload import HubUploadError, UploadResult, upload_output

__all__ = ["write_model_card", "upload_output", "UploadResult", "HubUploadError"]
