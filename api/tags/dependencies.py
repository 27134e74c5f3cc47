"""What other packages use of tags in their routes: the tag id in a path."""

from typing import Annotated

from fastapi import Path

from api.core.models import MAX_ID

TagId = Annotated[int, Path(gt=0, le=MAX_ID, description="The tag id.")]
