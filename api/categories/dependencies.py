"""What other packages use of categories in their routes: the category id in a path."""

from typing import Annotated

from fastapi import Path

from api.core.models import MAX_ID

CategoryId = Annotated[int, Path(gt=0, le=MAX_ID, description="The category id.")]
