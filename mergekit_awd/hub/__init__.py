"""Publishing merges: the upload of a finished merge folder to the Hugging Face Hub (``upload``) with
the token rules (``tokens``).  The model card is written with the merge (``presentation.card``)."""

from mergekit_awd.hub.upload import HubUploadError, UploadResult, upload_output

__all__ = ["upload_output", "UploadResult", "HubUploadError"]
