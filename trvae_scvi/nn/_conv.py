"""Convolutional pieces of trVAE for images (the paper's Morpho-MNIST network, Table 1).

Images are the rows of ``X``, flattened from ``image_shape = (channels, height, width)``. The
condition enters as an extra image channel made from its one-hot code by two fully connected
layers, in the encoder and in the first decoder layer (the MMD layer), as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SLOPE = 0.2  # the paper's leaky ReLU slope


class ConditionImage(nn.Module):
    """One-hot condition -> FC(128) -> FC(height * width): an image-sized condition channel.

    Parameters
    ----------
    n_conditions
        Number of condition categories.
    n_pixels
        ``height * width`` of the channel.

    Examples
    --------
    >>> ConditionImage(3, 16)(torch.tensor([[0], [2]])).shape
    torch.Size([2, 16])

    """

    def __init__(self, n_conditions: int, n_pixels: int):
        super().__init__()
        self.n_conditions = n_conditions
        self.hidden = nn.Linear(n_conditions, 128)
        self.out = nn.Linear(128, n_pixels)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        """The flattened condition channel of each cell.

        Parameters
        ----------
        condition
            Integer condition codes, shape ``(n, 1)``.

        Returns
        -------
        torch.Tensor
            Shape ``(n, n_pixels)``.

        Examples
        --------
        >>> ConditionImage(2, 4).forward(torch.tensor([[1]])).shape
        torch.Size([1, 4])

        """
        onehot = F.one_hot(condition.reshape(-1).long(), self.n_conditions).float()
        return F.leaky_relu(self.out(F.leaky_relu(self.hidden(onehot), SLOPE)), SLOPE)


class ConvEncoder(nn.Module):
    """[image, condition channel] -> 2 strided convolutions -> FC(``n_output``).

    Parameters
    ----------
    image_shape
        ``(channels, height, width)``; height and width divisible by 4.
    n_conditions
        Number of condition categories.
    n_output
        Width of the output (the paper's 128).
    n_filters
        Filters of the convolutions (the paper's 64; fewer are faster on a CPU).

    Examples
    --------
    >>> encoder = ConvEncoder((1, 8, 8), n_conditions=2, n_output=16, n_filters=4)
    >>> encoder(torch.rand(3, 64), torch.tensor([[0], [1], [1]])).shape
    torch.Size([3, 16])

    """

    def __init__(
        self, image_shape: tuple[int, int, int], n_conditions: int, n_output: int, n_filters: int
    ):
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = image_shape
        self.n_output = n_output
        self.condition_image = ConditionImage(n_conditions, height * width)
        self.conv1 = nn.Conv2d(channels + 1, n_filters, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(n_filters, n_filters, 4, stride=2, padding=1)
        self.fc = nn.Linear(n_filters * (height // 4) * (width // 4), n_output)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Encode flattened images with their conditions.

        Parameters
        ----------
        x
            Flattened images, shape ``(n, channels * height * width)``.
        condition
            Integer condition codes, shape ``(n, 1)``.

        Returns
        -------
        torch.Tensor
            Shape ``(n, n_output)``.

        Examples
        --------
        >>> encoder = ConvEncoder((1, 4, 4), n_conditions=2, n_output=8, n_filters=2)
        >>> encoder.forward(torch.rand(1, 16), torch.tensor([[1]])).shape
        torch.Size([1, 8])

        """
        channels, height, width = self.image_shape
        images = x.reshape(-1, channels, height, width)
        condition_channel = self.condition_image(condition).reshape(-1, 1, height, width)
        hidden = F.leaky_relu(self.conv1(torch.cat([images, condition_channel], 1)), SLOPE)
        hidden = F.leaky_relu(self.conv2(hidden), SLOPE)
        return F.leaky_relu(self.fc(hidden.flatten(1)), SLOPE)


class ConditionalImageLayer(nn.Module):
    """The MMD layer of the convolutional trVAE: FC([z, condition channel]) -> ``n_output``.

    Parameters
    ----------
    n_latent
        Dimension of z.
    image_shape
        ``(channels, height, width)`` of the images.
    n_conditions
        Number of condition categories.
    n_output
        Width of the layer (the paper's 128).

    Examples
    --------
    >>> layer = ConditionalImageLayer(4, (1, 8, 8), n_conditions=2, n_output=16)
    >>> layer(torch.randn(3, 4), torch.tensor([[0], [1], [1]])).shape
    torch.Size([3, 16])

    """

    def __init__(
        self, n_latent: int, image_shape: tuple[int, int, int], n_conditions: int, n_output: int
    ):
        super().__init__()
        self.n_output = n_output
        self.condition_image = ConditionImage(n_conditions, image_shape[1] * image_shape[2])
        self.fc = nn.Linear(n_latent + image_shape[1] * image_shape[2], n_output)

    def forward(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``y = g1(z, s)``.

        Parameters
        ----------
        z
            Latent codes, shape ``(n, n_latent)``.
        condition
            Integer condition codes, shape ``(n, 1)``.

        Returns
        -------
        torch.Tensor
            Shape ``(n, n_output)``.

        Examples
        --------
        >>> layer = ConditionalImageLayer(2, (1, 4, 4), n_conditions=2, n_output=8)
        >>> layer.forward(torch.randn(1, 2), torch.tensor([[0]])).shape
        torch.Size([1, 8])

        """
        joined = torch.cat([z, self.condition_image(condition)], -1)
        return F.leaky_relu(self.fc(joined), SLOPE)


class ConvDecoder(nn.Module):
    """``g2`` of the convolutional trVAE: FC -> 2 transposed convolutions -> image.

    Parameters
    ----------
    n_input
        Width of the MMD layer.
    image_shape
        ``(channels, height, width)``; height and width divisible by 4.
    n_filters
        Filters of the transposed convolutions.

    Examples
    --------
    >>> decoder = ConvDecoder(16, (1, 8, 8), n_filters=4)
    >>> decoder(torch.randn(3, 16)).shape
    torch.Size([3, 64])

    """

    def __init__(self, n_input: int, image_shape: tuple[int, int, int], n_filters: int):
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = image_shape
        self.n_filters = n_filters
        self.n_output = channels * height * width
        self.fc = nn.Linear(n_input, n_filters * (height // 4) * (width // 4))
        self.deconv1 = nn.ConvTranspose2d(n_filters, n_filters, 4, stride=2, padding=1)
        self.deconv2 = nn.ConvTranspose2d(n_filters, channels, 4, stride=2, padding=1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Decode MMD-layer outputs to flattened images (before the output bias).

        Parameters
        ----------
        y
            Shape ``(n, n_input)``.

        Returns
        -------
        torch.Tensor
            Shape ``(n, channels * height * width)``.

        Examples
        --------
        >>> ConvDecoder(8, (1, 4, 4), n_filters=2).forward(torch.randn(2, 8)).shape
        torch.Size([2, 16])

        """
        _, height, width = self.image_shape
        hidden = F.leaky_relu(self.fc(y), SLOPE)
        hidden = hidden.reshape(-1, self.n_filters, height // 4, width // 4)
        hidden = F.leaky_relu(self.deconv1(hidden), SLOPE)
        return self.deconv2(hidden).flatten(1)


class PixelBias(nn.Module):
    """A learnable bias per pixel: the output layer of the convolutional decoder.

    Parameters
    ----------
    n_output
        Number of pixels (times channels).

    Examples
    --------
    >>> PixelBias(4)(torch.zeros(2, 4)).shape
    torch.Size([2, 4])

    """

    def __init__(self, n_output: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_output))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Add the bias.

        Parameters
        ----------
        hidden
            Shape ``(n, n_output)``.

        Returns
        -------
        torch.Tensor
            ``hidden + bias``.

        Examples
        --------
        >>> PixelBias(2).forward(torch.ones(1, 2)).tolist()
        [[1.0, 1.0]]

        """
        return hidden + self.bias
