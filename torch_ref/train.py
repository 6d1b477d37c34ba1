"""The tutorial's PyTorch training: `train_with_clip` and the complete example's epoch loop.

As in the tutorial, with one addition: both return the per-step losses, so that training can
be compared step by step with flaxseq's.
"""

import torch


def train_with_clip(model, dataloader, criterion, optimizer, device, max_grad_norm=1.0):
    """One pass over `dataloader`: forward, loss, backward, `clip_grad_norm_`, optimizer step.

    `dataloader` yields `(inputs, targets)`; returns the loss of every step, as floats.
    """
    model.train()
    losses = []

    for batch in dataloader:
        inputs, targets = batch
        inputs, targets = inputs.to(device), targets.to(device)

        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, targets)
        loss.backward()

        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)

        optimizer.step()
        losses.append(loss.item())
    return losses


def train_text_classifier(model, dataloader, epochs, lr=0.001, max_grad_norm=1.0, device="cpu"):
    """The complete example's loop: Adam, cross-entropy, clipping, the mean loss per epoch.

    Returns `(epoch_losses, step_losses)`.
    """
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    epoch_losses, step_losses = [], []
    for _ in range(epochs):
        losses = train_with_clip(model, dataloader, criterion, optimizer, device, max_grad_norm)
        epoch_losses.append(sum(losses) / len(losses))
        step_losses += losses
    return epoch_losses, step_losses
