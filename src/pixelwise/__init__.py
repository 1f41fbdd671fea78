"""pixelwise: U-Net semantic segmentation."""
