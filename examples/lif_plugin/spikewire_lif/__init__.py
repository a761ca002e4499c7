"""A leaky integrate-and-fire population for spikewire, added from outside through the element contract."""
