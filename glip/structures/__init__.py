"""Boxes and image batches: `BoxList`, `ImageList`/`to_image_list` and box operations."""
