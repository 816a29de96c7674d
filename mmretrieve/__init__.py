"""mmretrieve: multimodal cross-modal retrieval in one CLIP-aligned space."""
